"""Where events go: one protocol for every sink, and the delivery guarantee stated once.

**The guarantee.** A media offset is committed only after every event it produced (utterance events and dead
letters alike) was acknowledged by its sink. A sink acknowledges by returning from `flush`: when `flush`
returns, everything `send` and `dead_letter` accepted since the last flush is durable (written, fsynced,
acknowledged by Kafka); when any of it is not, `flush` raises `SinkError` and the job commits nothing. After
a crash the job replays from its last commit, and events carry deterministic `utterance_id`s, so a consumer
sees at least once, with repeats it can drop.

A sink is used from several threads of one process (the live job's scorer threads); `send` must be safe to
call concurrently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from emostream.contracts import DeadLetterEvent, UtteranceEmotionEvent


class SinkError(RuntimeError):
    """Events a sink accepted were not delivered; nothing behind them may be committed."""


class Sink(Protocol):
    def send(self, event: UtteranceEmotionEvent) -> None:
        """Accept one utterance event (may buffer; delivered for sure only once `flush` returns)."""

    def dead_letter(self, event: DeadLetterEvent) -> None:
        """Accept one dead letter (the same delivery rule)."""

    def flush(self) -> None:
        """Block until everything accepted is durable; raise SinkError if any of it is not."""

    def close(self) -> None:
        """Flush what is left and release the sink's resources."""


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A file sink's writes: an OSError (disk full, permission) becomes the SinkError that stops the commit."""
    try:
        yield
    except OSError as error:
        raise SinkError(f"cannot write events to {path}: {error}") from error
