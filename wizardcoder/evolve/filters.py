"""Elimination rules for failed evolutions (WizardLM's four, plus truncation).

Each rule returns a verdict "pass" or "fail"; the engine records every verdict on the row
and counts failures per rule and per method. A rule that did not run (switched off, or an
earlier rule already failed) is recorded as "skipped". ``RULES`` is in the order they are
decided: the evolution's rules, then the judge, then the answer's (truncated applies to
both calls), so a row the judge drops is never answered.

``request_error`` is a verdict too, but not a rule one can switch off: a row whose LLM
request failed for its own reason (see :data:`~wizardcoder.llm.cache.ERROR_CLASSES`) is
eliminated like any failed evolution and its parent carried to the next round. So are the
verification verdicts ``no_python`` and ``failed_tests`` (``evolve.verify: tests``).
"""

from __future__ import annotations

import re
import string

from wizardcoder.evolve.prompts import REFUSAL_MARKERS, TEMPLATE_MARKERS

# The verdict names are shared with merge and the report, so they live in wizardcoder.rounds.
from wizardcoder.rounds import (  # noqa: F401 - re-exported for the engine and stats
    REQUEST_ERROR,
    RULES,
    VERDICTS,
    VERIFY_VERDICTS,
)

# A small English stop-word list: an output made only of these carries no task.
STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have i if in into is it its of on or so "
    "such that the their then there these this to was were will with you your we our "
    "question task answer here ok okay sure yes no".split()
)

_PREFIXES = re.compile(
    r"^\s*(#*\s*(rewritten|new|harder|evolved|updated)\s+(prompt|question|task)\s*#*\s*:?)\s*",
    re.IGNORECASE,
)


def clean_evolved(text: str) -> str:
    """Strip the labels models put in front of a rewritten question."""
    text = text.strip()
    text = _PREFIXES.sub("", text, count=1)
    return text.strip().strip('"').strip()


def is_truncated(finish_reason: str | None) -> bool:
    return finish_reason == "length"


def is_empty(text: str) -> bool:
    """Only punctuation, whitespace or stop words."""
    words = text.translate(str.maketrans("", "", string.punctuation)).lower().split()
    return not any(word not in STOP_WORDS for word in words)


def copies_template(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in TEMPLATE_MARKERS)


def is_refusal(text: str, max_words: int = 80) -> bool:
    """A short answer that apologises or refuses (WizardLM: 'sorry' and under 80 words)."""
    lowered = text.lower()
    return len(text.split()) < max_words and any(m in lowered for m in REFUSAL_MARKERS)


def judge_says_equal(text: str) -> bool:
    """Parse the judge's answer; anything but a clear 'Not Equal' that says 'equal' counts."""
    lowered = text.strip().lower()
    if re.search(r"\bnot\s+equal\b", lowered):
        return False
    return bool(re.search(r"\bequal\b", lowered))
