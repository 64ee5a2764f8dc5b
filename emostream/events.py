"""For downstream consumers: read utterance emotion events, each utterance once, committing as you go.

    from emostream.events import EmotionEvents
    from emostream.settings import load_settings

    with EmotionEvents(load_settings().kafka, group_id="crm-sync") as events:
        for event in events:                     # blocks, waiting for new events
            print(event.stream_id, event.speaker.id, event.label, event.transcript)

The live job delivers at least once: after a crash it replays from its last commit and may
send an utterance again, always with the same `utterance_id`. `EmotionEvents` drops those
repeats (it remembers the last `remember` ids), and commits the offsets of the events it has
handed out when you ask for the next one, so a consumer restart resumes after the last event
it finished with.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from types import TracebackType

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from emostream.contracts import UtteranceEmotionEvent
from emostream.kafka.clients import consumer as make_consumer
from emostream.settings import KafkaSettings

log = logging.getLogger(__name__)


class EmotionEvents:
    def __init__(self, kafka: KafkaSettings, group_id: str, streams: set[str] | None = None, remember: int = 100_000,
                 commit_seconds: float = 1.0, timeout: float | None = None) -> None:
        """streams: only these stream ids (default: all). timeout: stop iterating after this many seconds without
        a new event (default: wait forever)."""
        self.streams = streams
        self.remember = remember
        self.commit_seconds = commit_seconds
        self.timeout = timeout
        self.duplicates = 0
        self.invalid = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._done: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._consumer = make_consumer(kafka, [kafka.emotions_topic], group_id=group_id)

    def __iter__(self) -> Iterator[UtteranceEmotionEvent]:
        quiet_since = time.monotonic()
        pending: TopicPartition | None = None
        offset = -1
        while self.timeout is None or time.monotonic() - quiet_since < self.timeout:
            for tp, records in self._consumer.poll(timeout_ms=200).items():
                for record in records:
                    if pending is not None:  # the caller came back for more: the previous event is finished
                        self._done[pending] = offset + 1
                    pending, offset = tp, record.offset
                    event = self._parse(record.value)
                    if event is None:
                        continue
                    quiet_since = time.monotonic()
                    yield event
                    self._maybe_commit()
            self._maybe_commit()
        if pending is not None:
            self._done[pending] = offset + 1

    def _parse(self, value: bytes | None) -> UtteranceEmotionEvent | None:
        try:
            event = UtteranceEmotionEvent.model_validate_json(value or b"")
        except ValidationError as error:
            self.invalid += 1
            log.warning("skipping a message that is not an utterance event: %s", error.errors()[0]["msg"])
            return None
        if self.streams is not None and event.stream_id not in self.streams:
            return None
        if event.utterance_id in self._seen:
            self.duplicates += 1
            return None
        self._seen[event.utterance_id] = None
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)
        return event

    def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Commit the offsets of the events already finished with."""
        self._last_commit = time.monotonic()
        if self._done:
            self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in self._done.items()})

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._consumer.close()

    def __enter__(self) -> EmotionEvents:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()
