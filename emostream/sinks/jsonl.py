"""Events as JSON lines in a local file: one object per line, utterance events and dead letters alike."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from emostream.contracts import DeadLetterEvent, UtteranceEmotionEvent
from emostream.sinks.base import writing


class JsonlSink:
    """Appends to `path` (created with its folder); `flush` makes what was written durable (fsync)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def send(self, event: UtteranceEmotionEvent) -> None:
        self._write(event.model_dump_json())

    def dead_letter(self, event: DeadLetterEvent) -> None:
        self._write(event.model_dump_json())

    def flush(self) -> None:
        with self._lock, writing(self.path):
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self.flush()
        finally:  # closing writes what a failed flush left buffered: on a full disk that fails too, as a SinkError
            with writing(self.path):
                self._file.close()

    def _write(self, line: str) -> None:
        with self._lock, writing(self.path):
            self._file.write(line + "\n")
