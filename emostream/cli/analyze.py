"""`emostream analyze FILE`: a local media file through the whole chain in this process, no Kafka or Ray cluster:
perception, utterances, encoders and the emotion model, one event per utterance."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emostream.cli.common import Commands
from emostream.contracts import UtteranceEmotionEvent
from emostream.settings import Settings, load_settings

# The spine (perception and the emotion model) loads torch and their models: imported inside file_events, so that the other
# commands start fast.

TOP = 3  # probabilities shown per utterance: the label's and the next two


def add_analyze(commands: Commands) -> None:
    analyze = commands.add_parser("analyze", help="score the emotion of every utterance in a media file",
                                  description="Run the whole chain on a local file in this process (no Kafka, no Ray): "
                                              "perception, utterances, encoders and the emotion model. Prints each "
                                              "utterance's time, speaker, emotion with its top probabilities, valence and "
                                              "arousal, transcript and explanation; --json prints the events instead.")
    analyze.add_argument("input", metavar="INPUT", help="media file (video or audio)")
    analyze.add_argument("--stream-id", metavar="ID", help="stream id to report (default: the file name)")
    analyze.add_argument("--channels", metavar="ROLES", help="comma-separated role of each audio channel, e.g. agent,customer")
    analyze.add_argument("--no-asr", action="store_true", help="do not transcribe (no words are processed)")
    analyze.add_argument("--model", metavar="DIR", help="emotion model folder or preset (default: serve.model, the embedded model)")
    analyze.add_argument("--json", action="store_true",
                         help="print each utterance's event (UtteranceEmotionEvent) as one JSON object a line")
    analyze.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {"voice": {"asr": False}} if args.no_asr else {}
    if args.model:
        overrides["serve"] = {"model": args.model}
    settings = load_settings(args.config, **overrides)
    channels = tuple(args.channels.split(",")) if args.channels else None
    count = 0
    for event in file_events(args.input, args.stream_id or Path(args.input).stem, settings, channels):
        print(event.model_dump_json() if args.json else describe_event(event), flush=True)
        count += 1
    if not args.json:
        print(f"{count} utterances")
    return 0


def file_events(
    path: str | Path, stream_id: str, settings: Settings, channels: tuple[str, ...] | None = None
) -> Iterator[UtteranceEmotionEvent]:
    """The file's events, each as soon as its utterance ends, scored as the live job scores a stream: segment by
    segment, with one context for the file so the model's memory and each speaker's voice statistics carry over."""
    from emostream.models.score import serve_scorer
    from emostream.spine import Spine

    scorer = serve_scorer(settings.serve)  # first: a wrong --model fails fast
    yield from Spine(settings, scorer=scorer).file_events(path, stream_id, channels)


def describe_event(event: UtteranceEmotionEvent) -> str:
    """One line per utterance: when, who, the emotion with its runners-up, valence and arousal, the words, and why."""
    speaker = event.speaker
    who = speaker.id + (f" ({speaker.role})" if speaker.role and speaker.role != speaker.id else "")
    ranked = sorted(event.probabilities.items(), key=lambda item: item[1], reverse=True)[:TOP]
    runners_up = "".join(f", {label} {p:.2f}" for label, p in ranked if label != event.label)
    words = f' "{event.transcript}"' if event.transcript else ""
    return (f"{event.start:6.2f}–{event.end:6.2f} {who}: {event.label} ({event.probabilities[event.label]:.2f}{runners_up}) "
            f"valence {event.valence:+.2f} arousal {event.arousal:+.2f}{words} — {event.explanation}")
