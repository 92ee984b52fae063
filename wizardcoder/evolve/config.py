"""params.yaml section `evolve`: one Code Evol-Instruct round (methods, sampling, elimination,
verification)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import ClassVar

from wizardcoder.config import load_section, option, require
from wizardcoder.errors import ConfigError
from wizardcoder.evolve import filters
from wizardcoder.evolve.prompts import DEFAULT_METHOD_WEIGHTS, METHODS
from wizardcoder.evolve.verify import TEST_MODES, VERIFY_MODES
from wizardcoder.llm.config import LLMConfig
from wizardcoder.rounds import load_rounds, round_number
from wizardcoder.sandbox.config import SandboxConfig

log = logging.getLogger(__name__)


@dataclass
class VerifySandboxConfig(SandboxConfig):
    """params.yaml `evolve.sandbox`: the sandbox `verify: tests` runs answers in (the same
    keys and defaults as scoring's, set apart so a change to scoring never reruns
    evolution)."""

    SECTION: ClassVar[str] = "evolve.sandbox"


@dataclass
class EvolveConfig:
    """params.yaml section `evolve` (shared by every round)."""

    methods: dict[str, float] = option(
        default_factory=lambda: dict(DEFAULT_METHOD_WEIGHTS),
        help=f"Sampling weight per evolution method (0 disables one). Methods: {list(METHODS)}.")
    seed: int = option(0, help="Seed of the per-row method choice and of the sampling seeds.")
    temperature: float = option(0.7, help="Sampling temperature of the evolution call.")
    top_p: float = option(0.95, help="Nucleus sampling of the evolution call.")
    evolve_max_tokens: int = option(256, help="max_tokens of the evolution call.")
    answer_temperature: float = option(0.2, help="Sampling temperature of the answer call.")
    answer_max_tokens: int = option(512, help="max_tokens of the answer call.")
    judge_max_tokens: int = option(8, help="max_tokens of the equality judge call.")
    eliminate: list[str] = option(
        default_factory=lambda: list(filters.RULES),
        help=f"Elimination rules switched on; any of {list(filters.RULES)}.")
    refusal_max_words: int = option(80, help="An answer shorter than this that apologises fails.")
    budget_usd: float = option(
        0.0, help="Spending cap of one round in USD (needs llm.price_per_million_*); 0 = no "
                  "cap. Answers from the request cache count at their recorded usage (paid "
                  "once), so a rerun with the same cap sends nothing new; raise it to resume.",
        affects_outputs=False)
    max_failed_fraction: float = option(
        0.02, help="Most rows of a round that may be eliminated because their LLM request "
                   "failed permanently (verdict request_error: context_length, "
                   "content_filter, bad_request, empty_content), as a fraction of the round's "
                   "rows, but never fewer than max_failed_rows_min; above it the stage fails "
                   "(exit 2, each failed row named, nothing written) and stops sending as "
                   "soon as the limit is passed. Transient failures (429, 5xx, timeouts) "
                   "never count: they are retried, and one still failing stops the stage "
                   "without dropping its row.",
        affects_outputs=False)
    max_failed_rows_min: int = option(
        5, help="Permanent request failures a round always tolerates, however small: the "
                "limit is max(max_failed_rows_min, floor(max_failed_fraction x rows)), the "
                "minimum kept below the round's row count (a round whose every row failed "
                "stops unless max_failed_fraction is 1). "
                "5 and 0.02: a 60-row run survives two bad rows, a 20,000-row run stops "
                "after 400 (a broken prompt fails them all).",
        affects_outputs=False)

    verify: str = option(
        "none", help="none: keep answers as the LLM wrote them. tests: the answer must come "
                     "with assert-based tests that its solution passes in the sandbox "
                     "(`evolve.sandbox`: limits, isolation, workers), else it is sampled "
                     "again up to verify_attempts and then eliminated (verdicts failed_tests, "
                     "no_python). Off by default: the embedded 135M model hardly ever writes "
                     "passing tests, so nearly every row would be eliminated.")
    verify_attempts: int = option(
        3, help="Answers sampled per row under verify: tests (each with its own seed, each "
                "cached) before the row is eliminated.")
    verify_tests: str = option(
        "inline", help="inline: the answer call asks for the solution and its tests in one "
                       "answer. separate: a second call per attempt writes the tests for the "
                       "answer (one more call per attempt).")
    sandbox: VerifySandboxConfig = option(
        default_factory=VerifySandboxConfig,
        help="verify: tests only: the limits, isolation and workers answers run under (keys "
             "as in section `score`, which scoring alone reads).")

    def __post_init__(self):
        require(self.verify in VERIFY_MODES, "evolve", "verify", " or ".join(VERIFY_MODES))
        require(self.verify_tests in TEST_MODES, "evolve", "verify_tests",
                " or ".join(TEST_MODES))
        require(self.verify_attempts >= 1, "evolve", "verify_attempts", "an integer >= 1")
        for name, weight in self.methods.items():
            if name not in METHODS:
                raise ConfigError(f"evolve.methods: unknown method {name!r}; "
                                  f"valid methods: {', '.join(METHODS)}")
            require(weight >= 0, "evolve", f"methods.{name}", "a weight >= 0")
        require(any(w > 0 for w in self.methods.values()), "evolve", "methods",
                "at least one method with a weight > 0")
        for rule in self.eliminate:
            if rule not in filters.RULES:
                raise ConfigError(f"evolve.eliminate: unknown rule {rule!r}; "
                                  f"valid rules: {', '.join(filters.RULES)}")
        require(0 <= self.temperature <= 2, "evolve", "temperature", "a number in [0, 2]")
        require(0 < self.top_p <= 1, "evolve", "top_p", "a number in (0, 1]")
        require(self.budget_usd >= 0, "evolve", "budget_usd", "a number of USD >= 0 (0 = no cap)")
        require(0 <= self.max_failed_fraction <= 1, "evolve", "max_failed_fraction",
                "a fraction in [0, 1] (0.02 = at most 2% of a round's rows)")
        require(self.max_failed_rows_min >= 0, "evolve", "max_failed_rows_min",
                "an integer >= 0")
        for name in ("evolve_max_tokens", "answer_max_tokens", "judge_max_tokens"):
            require(getattr(self, name) > 0, "evolve", name, "a positive integer")

    def max_failed_rows(self, rows: int) -> int:
        """Rows of a round of ``rows`` that may fail their request permanently."""
        floor = min(self.max_failed_rows_min, max(0, rows - 1))  # never the whole round
        return max(floor, math.floor(self.max_failed_fraction * rows + 1e-9))


def load_configs(params: str, round_key: str,
                 input_path: str) -> tuple[LLMConfig, EvolveConfig]:
    """Sections `llm` and `evolve` for round ``round_key``, warning when its input is not the
    one `rounds` names."""
    round_number(round_key)
    rounds = load_rounds(params)
    if round_key in rounds and rounds[round_key] != input_path:
        log.warning("evolve %s: input %s differs from params rounds.%s=%s", round_key,
                    input_path, round_key, rounds[round_key])
    return load_section(params, "llm", LLMConfig), load_section(params, "evolve", EvolveConfig)
