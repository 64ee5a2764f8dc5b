"""Instruction data for the LLM path: the answer a labelled clip should get, in one fixed, parseable shape.

    emotion: sad; intensity: strong; words: grief, sadness; because: pitch -1.4 σ below this speaker's norm; slower speech (-1.1 σ)

- emotion: the clip's label, in the model's label set;
- intensity: "normal" or "strong" (RAVDESS says which), "unknown" for corpora that do not;
- words: open-vocabulary words from a documented lexicon (`labels.OPEN_WORDS`, Plutchik's intensity tiers), looked
  up by label and intensity, never written per clip; a captioned corpus's own words (MER-OV, EMER) are used as given;
- because: the strongest cues measured for this clip (`explain.voice_cues`, `explain.face_cues`: prosody in the
  speaker's own standard deviations, facial actions and their durations, micro-expressions), or a caption's own
  explanation. The transcript is not cited: the LLM reads it already and it says nothing about how it was said.

`because` comes last so it may hold any text (";" too); `parse_answer` reads the shape back, and `grounded` keeps
only the cues a generated answer cites that were really measured for the utterance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from emostream.labels import INTENSITIES, open_words
from emostream.models.explain import face_cues, voice_cues
from emostream.perception.utterance import UtteranceBundle

CUES_IN_ANSWER = 2  # the strongest measured cues an answer cites (short answers train and generate faster)
NO_CUE = "no measured cue stands out"
MAX_WORDS = 8
MAX_WORD_LENGTH = 32  # characters; longer "words" are run-on generations, dropped
_SHAPE = re.compile(r"\bemotion:\s*(?P<emotion>[^;]+?)\s*;\s*intensity:\s*(?P<intensity>[^;]+?)\s*;"
                    r"\s*words:\s*(?P<words>[^;]*?)\s*;\s*because:\s*(?P<because>.*?)\s*$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Answer:
    """What the LLM writes about one utterance."""

    emotion: str  # a label of the model's label set (lowercase)
    intensity: str  # one of labels.INTENSITIES
    words: tuple[str, ...]  # open-vocabulary emotion words, lowercase
    because: str  # the measured cues (or a caption's explanation) behind it

    def text(self) -> str:
        """The answer in its fixed shape (what the LLM is trained to write)."""
        return f"emotion: {self.emotion}; intensity: {self.intensity}; words: {', '.join(self.words)}; because: {self.because}"


def measured_because(bundle: UtteranceBundle) -> str:
    """The clip's strongest measured voice and face cues, in words ("pitch +1.8 σ above this speaker's norm; …")."""
    cues = sorted(voice_cues(bundle), key=lambda c: -abs(c.value))[:CUES_IN_ANSWER]
    cues += face_cues(bundle)[: CUES_IN_ANSWER - len(cues)]
    return "; ".join(cue.detail for cue in cues) or NO_CUE


def grounded(answer: Answer, bundle: UtteranceBundle) -> Answer:
    """The answer with its `because` cut down to cues that were measured for this utterance, each in its measured
    wording: a generated cue names a measured one when the two read the same but for their numbers ("pitch +1.5 σ
    above this speaker's norm" for a measured +1.9 σ), and the measured one is kept; a cue that no measurement backs
    is dropped; nothing left gives NO_CUE."""
    measured = {_unnumbered(cue.detail): cue.detail for cue in voice_cues(bundle) + face_cues(bundle)}
    cited = [measured.get(_unnumbered(part.strip())) for part in answer.because.split(";")]
    kept = list(dict.fromkeys(cue for cue in cited if cue is not None))
    return Answer(answer.emotion, answer.intensity, answer.words, "; ".join(kept) or NO_CUE)


_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def _unnumbered(cue: str) -> str:
    return _NUMBER.sub("#", cue)


def read_answers(texts: list[str], bundles: list[UtteranceBundle]) -> list[Answer | None]:
    """Generated texts of these utterances as grounded answers (None where a text does not parse)."""
    return [grounded(answer, bundle) if (answer := parse_answer(text)) else None for text, bundle in zip(texts, bundles, strict=True)]


def labelled_answer(label: str, label_set: str, intensity: str, bundle: UtteranceBundle) -> Answer:
    """The target answer of a labelled clip: lexicon words for its label and intensity, its own measured cues."""
    return Answer(label, intensity, open_words(label, label_set, intensity), measured_because(bundle))


def parse_answer(text: str) -> Answer | None:
    """An answer read back from generated text, from its first "emotion:" on (a model may write a few words before
    it); None when it does not have the shape (a parse failure)."""
    match = _SHAPE.search(text)
    if match is None:
        return None
    intensity = match["intensity"].lower()
    if intensity not in INTENSITIES:
        return None
    words = tuple(w.strip().lower() for w in match["words"].split(",") if 0 < len(w.strip()) <= MAX_WORD_LENGTH)
    return Answer(match["emotion"].lower(), intensity, words[:MAX_WORDS], match["because"])
