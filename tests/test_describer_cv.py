"""bench/describer_cv.py's own arithmetic: which clips a fold trains and reads, and how a reading is scored."""

from __future__ import annotations

from collections import Counter

import numpy as np

from bench.describer_cv import LABELS, per_speaker, row, spread_over_speakers, war_uar


def rows_of(speakers: int, per_label: int) -> list[dict[str, str]]:
    """Feature rows as the cache holds them: a clip may have been cut into pieces (a row each, one key)."""
    rows = [{"key": f"s{s}-{label}-{k}", "speaker": f"s{s}", "label": label}
            for s in range(speakers) for label in LABELS for k in range(per_label)]
    return rows + [dict(rows[0]), dict(rows[0])]  # the first clip's second and third pieces


def test_a_fold_trains_on_so_many_clips_of_each_class_of_each_speaker() -> None:
    rows = rows_of(speakers=3, per_label=2)
    for seed in range(8):
        keys = per_speaker(rows, 2, np.random.default_rng(seed))
        assert len(keys) == len(set(keys))  # a clip's pieces are one clip, drawn once
        picked = Counter((key.split("-")[0], key.split("-")[1]) for key in keys)
        assert picked == {(f"s{s}", label): 2 for s in range(3) for label in LABELS}


def test_a_fold_reads_so_many_clips_of_each_class_spread_over_its_speakers() -> None:
    rows = rows_of(speakers=4, per_label=2)
    for seed in range(8):
        keys = spread_over_speakers(rows, 8, np.random.default_rng(seed))
        assert len(keys) == len(set(keys)) == 8 * len(LABELS)  # every clip of every class, each once
    keys = spread_over_speakers(rows_of(speakers=4, per_label=5), 6, np.random.default_rng(1))
    assert len(keys) == len(set(keys)) == 6 * len(LABELS)
    assert Counter(key.split("-")[1] for key in keys) == dict.fromkeys(LABELS, 6)
    by_speaker = Counter(key.split("-")[0] for key in keys)
    assert max(by_speaker.values()) - min(by_speaker.values()) <= len(LABELS)  # no speaker gives them all


def test_an_unparsed_answer_is_wrong_and_the_row_counts_agreement_and_cues() -> None:
    assert war_uar(["sad", "sad", "angry"], ["sad", None, "angry"]) == (2 / 3, 0.75)
    record = {"truth": "sad", "classifier": "sad", "generated": "sad", "label scored": "sad", "parsed": True,
              "served_parsed": True, "served_words_fit": True, "served_cites": False, "generate_seconds": 0.4,
              "score_seconds": 0.1}
    unparsed = {**record, "generated": None, "parsed": False, "served_cites": True}
    line = row("fold 1", 10, [record, unparsed])
    assert "| 1/2 (50.0%) |" in line  # parse failures
    assert "| 2/2 | 1/2 | 1/2 |" in line  # words fit; cites a measured cue; free label = classifier's
