"""`emostream analyze FILE`: a local media file through perception in this process, no Kafka."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from emostream.cli.common import Commands
from emostream.settings import load_settings

# Perception loads torch and its models: imported inside cmd_analyze, so that the other commands start fast.


def add_analyze(commands: Commands) -> None:
    analyze = commands.add_parser("analyze", help="find the utterances in a media file and print them",
                                  description="Run perception on a local file (no Kafka): utterances with speaker, "
                                              "transcript, prosody and the faces seen while each was spoken.")
    analyze.add_argument("input", metavar="INPUT", help="media file (video or audio)")
    analyze.add_argument("--stream-id", metavar="ID", help="stream id to report (default: the file name)")
    analyze.add_argument("--channels", metavar="ROLES", help="comma-separated role of each audio channel, e.g. agent,customer")
    analyze.add_argument("--no-asr", action="store_true", help="do not transcribe (no words are processed)")
    analyze.set_defaults(func=cmd_analyze)


def describe_utterance(bundle: Any) -> str:
    """One line per utterance: who, when, what was said, how it sounded, which face."""
    who = bundle.speaker_id + (f" ({bundle.role})" if bundle.role and bundle.role != bundle.speaker_id else "")
    words = f' "{bundle.transcript}"' if bundle.transcript else ""
    prosody = bundle.prosody
    sound = f"pitch {prosody.f0_mean:.0f} Hz" if np.isfinite(prosody.f0_mean) else "unvoiced"
    if np.isfinite(bundle.prosody_z.get("f0_mean", float("nan"))):
        sound += f" ({bundle.prosody_z['f0_mean']:+.1f} σ)"
    if np.isfinite(prosody.speaking_rate):
        sound += f", {prosody.speaking_rate:.1f} syllables/s"
    faces = ""
    if bundle.face is not None:
        faces = f"; speaking face {bundle.face.track_id} (score {bundle.face.active_speaker_score:.2f})"
    if bundle.listeners:
        faces += "; listening: " + ", ".join(f"face {f.track_id}" for f in bundle.listeners)
    return f"{bundle.stream_id} {bundle.start:6.2f}–{bundle.end:6.2f} {who}:{words} — {sound}{faces}"


def cmd_analyze(args: argparse.Namespace) -> int:
    from emostream.perception.pipeline import Perception

    overrides: dict[str, Any] = {"voice": {"asr": False}} if args.no_asr else {}
    settings = load_settings(args.config, **overrides)
    channels = tuple(args.channels.split(",")) if args.channels else None
    perception = Perception(settings)
    count = 0
    for bundle in perception.analyze_file(args.input, args.stream_id or Path(args.input).stem, channels):
        print(describe_utterance(bundle), flush=True)
        count += 1
    print(f"{count} utterances")
    return 0
