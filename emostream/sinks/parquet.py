"""Events in a Parquet file (backfill): one row per event with its ids and label, and the whole event as JSON."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emostream.contracts import DeadLetterEvent, UtteranceEmotionEvent
from emostream.sinks.base import writing

SCHEMA = pa.schema([
    ("kind", pa.string()),  # event | dead_letter
    ("stream_id", pa.string()),
    ("utterance_id", pa.string()),
    ("start", pa.float64()),
    ("label", pa.string()),
    ("json", pa.string()),  # the whole event (UtteranceEmotionEvent or DeadLetterEvent)
])


class ParquetSink:
    """Rows are buffered and written as one row group per `flush`; the file is complete once closed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.path, SCHEMA)
        self._rows: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def send(self, event: UtteranceEmotionEvent) -> None:
        self._add({"kind": "event", "stream_id": event.stream_id, "utterance_id": event.utterance_id,
                   "start": event.start, "label": event.label, "json": event.model_dump_json()})

    def dead_letter(self, event: DeadLetterEvent) -> None:
        self._add({"kind": "dead_letter", "stream_id": event.stream_id, "utterance_id": None, "start": None,
                   "label": None, "json": event.model_dump_json()})

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            if not rows:
                return
            with writing(self.path):
                self._writer.write_table(pa.Table.from_pylist(rows, schema=SCHEMA))

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._writer.close()

    def _add(self, row: dict[str, object]) -> None:
        with self._lock:
            self._rows.append(row)
