"""Sinks for emotion events and dead letters (protocol and guarantee in `base`); add one by a module and a line here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from emostream.settings import Settings
from emostream.sinks.base import Sink, SinkError
from emostream.sinks.jsonl import JsonlSink
from emostream.sinks.kafka import KafkaSink
from emostream.sinks.parquet import ParquetSink

__all__ = ["SINKS", "Sink", "SinkError", "open_sink"]

# name -> how to open it from the settings and an output path (None for sinks that need none)
SINKS: dict[str, Callable[[Settings, Path | None], Sink]] = {
    "kafka": lambda settings, path: KafkaSink(settings.kafka),
    "jsonl": lambda settings, path: JsonlSink(_required(path, "jsonl")),
    "parquet": lambda settings, path: ParquetSink(_required(path, "parquet")),
}


def open_sink(name: str, settings: Settings, path: str | Path | None = None) -> Sink:
    if name not in SINKS:
        raise ValueError(f"unknown sink {name!r} (known: {', '.join(SINKS)})")
    return SINKS[name](settings, Path(path) if path is not None else None)


def _required(path: Path | None, name: str) -> Path:
    if path is None:
        raise ValueError(f"the {name} sink needs an output file (live.sink_path, or --out)")
    return path
