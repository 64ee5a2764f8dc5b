"""Session actors: each holds the stream sessions of the streams hashed onto it.

A stream's perceived segments go, in seq order, to the one actor that owns it
(`owner`); the actor stitches them into utterances (voice activity, speakers, face
tracks). The actors are spread over the cluster's nodes (Ray's SPREAD strategy), as Ray
Data spreads the perception actors: on a cluster of several nodes, the session work
shares them. State is in memory only: when an actor dies (or its node), the job replays
its open streams from their first segment, through fresh actors on the nodes left.
"""

from __future__ import annotations

import zlib

import ray

from emostream.live.stages import perceived
from emostream.perception.session import Draft, StreamSessions
from emostream.perception.utterance import UtteranceBundle
from emostream.settings import Settings


def start_session_actors(settings: Settings, group_id: str) -> list[ray.actor.ActorHandle]:
    """The job's `live.session_actors` session actors, their models loaded (a stream's first utterance must not
    wait for them)."""
    blob = settings.model_dump_json()
    actors = [SessionActor.options(name=f"emostream-session-{group_id}-{i}",  # type: ignore[attr-defined]
                                   enable_task_events=settings.live.task_events).remote(blob)
              for i in range(settings.live.session_actors)]
    ray.get([actor.ping.remote() for actor in actors])
    return actors


def owner(stream_id: str, actors: int) -> int:
    """The session actor of a stream: a stable hash, the same in every process and run."""
    return zlib.crc32(stream_id.encode()) % actors


@ray.remote(num_cpus=0.1, max_concurrency=1, scheduling_strategy="SPREAD")
class SessionActor:
    def __init__(self, settings_json: str) -> None:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        threadpool_limits(1)  # voice activity and speaker models: one thread each, no spinning second core
        import torch  # noqa: PLC0415

        torch.set_num_threads(1)
        self.sessions = StreamSessions(Settings.model_validate_json(settings_json))
        self.sessions.warm_up()  # before the job's ping returns: a stream's first utterance must not wait for it

    def push(self, payload: bytes, drafts: bool, close: bool = False) -> tuple[list[UtteranceBundle], list[Draft]]:
        """The utterances the segment closed, in time order, and (if asked for) the stream's new drafts.
        `close`: then close the stream's session (it was open too long); its next segment starts a fresh one."""
        segment = perceived(payload)
        bundles = self.sessions.push(segment)
        if close:
            return bundles + self.sessions.close(segment.stream_id), []
        return bundles, self.sessions.drafts(segment.stream_id) if drafts else []

    def close(self, stream_id: str) -> list[UtteranceBundle]:
        """Close a stream's session (it paused; its next segment starts a fresh one): its last utterances."""
        return self.sessions.close(stream_id)

    def flush_idle(self) -> dict[str, list[UtteranceBundle]]:
        """Streams idle for `voice.idle_seconds`, flushed and forgotten: their last utterances."""
        before = set(self.sessions.sessions)
        bundles = self.sessions.flush_idle()
        flushed: dict[str, list[UtteranceBundle]] = {s: [] for s in before - set(self.sessions.sessions)}
        for bundle in bundles:
            flushed[bundle.stream_id].append(bundle)
        return flushed

    def ping(self) -> bool:
        return True
