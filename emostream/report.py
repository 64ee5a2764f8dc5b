"""A self-contained HTML report of utterance events: an emotion timeline per speaker and a table.

No scripts and no external files: one HTML page with inline SVG, safe to mail around
(it holds transcripts, which are personal data: treat the file accordingly).
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

COLOURS = {  # one colour per emotion family; unknown labels are grey
    "neutral": "#9e9e9e", "calm": "#64b5f6", "happy": "#fdd835", "sad": "#3949ab", "angry": "#e53935",
    "fearful": "#8e24aa", "fear": "#8e24aa", "disgust": "#43a047", "surprised": "#fb8c00", "surprise": "#fb8c00",
    "worried": "#8e24aa", "contempt": "#6d4c41", "doubt": "#78909c",
}
ROW_HEIGHT, LEFT, WIDTH = 34, 150, 900


def _colour(label: str) -> str:
    return COLOURS.get(label, "#bdbdbd")


def timeline_svg(events: list[dict[str, Any]]) -> str:
    """One row per (stream, speaker); one bar per utterance, coloured by label, opacity by confidence."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        rows[(event["stream_id"], event["speaker"]["id"])].append(event)
    end = max((e["end"] for e in events), default=1.0) or 1.0
    scale = (WIDTH - LEFT - 10) / end
    height = ROW_HEIGHT * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
             f'aria-label="emotion timeline per speaker">']
    for i, ((stream, speaker), utterances) in enumerate(sorted(rows.items())):
        y = i * ROW_HEIGHT + 4
        parts.append(f'<text x="4" y="{y + 18}" font-size="12">{escape(stream)} · {escape(speaker)}</text>')
        for event in utterances:
            x, w = LEFT + event["start"] * scale, max(2.0, (event["end"] - event["start"]) * scale)
            confidence = event["probabilities"].get(event["label"], 1.0)
            title = f'{event["start"]:.1f}–{event["end"]:.1f} s: {event["label"]} ({confidence:.0%}) {event.get("transcript") or ""}'
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{ROW_HEIGHT - 8}" rx="3" '
                         f'fill="{_colour(event["label"])}" fill-opacity="{0.35 + 0.65 * confidence:.2f}">'
                         f'<title>{escape(title)}</title></rect>')
    axis_y = ROW_HEIGHT * len(rows) + 20
    step = max(1, round(end / 10))
    for t in range(0, int(end) + 1, step):
        parts.append(f'<text x="{LEFT + t * scale:.1f}" y="{axis_y}" font-size="10">{t}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(events: list[dict[str, Any]], title: str = "emostream report") -> str:
    events = sorted(events, key=lambda e: (e["stream_id"], e["start"]))
    legend = " ".join(f'<span style="background:{_colour(label)};padding:2px 6px;border-radius:3px">{escape(label)}</span>'
                      for label in sorted({e["label"] for e in events}))
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in (
            e["stream_id"], e["speaker"]["id"], f'{e["start"]:.2f}–{e["end"]:.2f}', e["label"],
            f'{e["probabilities"].get(e["label"], 0):.0%}', f'{e["valence"]:+.2f} / {e["arousal"]:+.2f}',
            e.get("transcript") or "", e["explanation"])) + "</tr>"
        for e in events)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;
font-size:13px;vertical-align:top}}</style></head><body>
<h1>{escape(title)}</h1>
<p>{len(events)} utterances. Bars: one per utterance, colour = emotion, stronger = more confident. {legend}</p>
{timeline_svg(events)}
<table><tr><th>stream</th><th>speaker</th><th>time (s)</th><th>emotion</th><th>p</th><th>valence / arousal</th>
<th>transcript</th><th>explanation</th></tr>
{rows}
</table></body></html>
"""


def write_html_report(events: list[dict[str, Any]], path: Path, title: str = "emostream report") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(events, title))
    return path
