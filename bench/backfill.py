"""Backfill throughput: recorded media scored per wall-clock second, as a multiple of real time.

Runs `emostream backfill`'s pipeline (Ray Data perception stage, scorer actors with
Whisper, sentence embeddings and the default model) over the shared LibriVox recordings
and the meeting sample (face video + speech), twice: once over N files and once over 2N
(the same recordings under other stream names). Start-up (actors loading their models)
costs the same in both, so the difference gives the steady rate. Figures are printed,
never asserted. Run inside a loopback-only namespace:
    unshare -n sh -c 'ip link set lo up && exec env RAY_AUTH_MODE=disabled .venv/bin/python bench/backfill.py'
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from emostream.contracts import UtteranceEmotionEvent
from emostream.live.backfill import backfill, records_from_files
from emostream.media.segmenter import probe
from emostream.media.synthetic import mux_files, speech_track
from emostream.settings import load_settings

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def run(paths: list[Path], perception_actors: int) -> tuple[float, int]:
    settings = load_settings()
    started = time.perf_counter()
    outputs = list(backfill(records_from_files(paths, settings, None), settings, perception_actors))
    return time.perf_counter() - started, sum(isinstance(output, UtteranceEmotionEvent) for output in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs for the local Ray instance")
    parser.add_argument("--perception-actors", type=int, default=1)
    args = parser.parse_args()
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        speech = sorted((DATA / "speech-librivox").glob("*.wav"))
        files = [shutil.copy(p, folder / f"a-{p.name}") for p in speech]
        files.append(mux_files(DATA / "faces-pyfeat" / "WolfgangLanger_Pexels.mp4",
                               speech_track(speech[:3], folder / "speech.wav"), folder / "a-meeting.mp4"))
        doubled = files + [shutil.copy(p, folder / f"b-{Path(p).name[2:]}") for p in files]
        seconds = [sum(probe(p).duration or 0.0 for p in group) for group in (files, doubled)]
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        print(f"# backfill bench: {platform.machine()}, {args.cpus} CPUs, {args.perception_actors} perception actor(s); "
              f"{len(files)} files ({seconds[0]:.0f} s of media: {len(speech)} read-speech WAVs, one 640x360 meeting video)")
        (wall_1, events_1), (wall_2, events_2) = run([Path(p) for p in files], args.perception_actors), \
            run([Path(p) for p in doubled], args.perception_actors)
        print(f"{len(files):3d} files: {seconds[0]:6.1f} s media in {wall_1:6.1f} s wall = {seconds[0] / wall_1:5.2f}x real time "
              f"(start-up included), {events_1} events")
        print(f"{len(doubled):3d} files: {seconds[1]:6.1f} s media in {wall_2:6.1f} s wall = {seconds[1] / wall_2:5.2f}x real time "
              f"(start-up included), {events_2} events")
        print(f"steady rate (difference): {(seconds[1] - seconds[0]) / (wall_2 - wall_1):.2f}x real time")
        ray.shutdown()


if __name__ == "__main__":
    main()
