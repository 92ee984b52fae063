"""params.yaml section `score`: the sandbox's limits and isolation
(:class:`~wizardcoder.sandbox.config.SandboxConfig`), pass@k's k, and the HumanEval+/MBPP+
settings."""

from __future__ import annotations

from dataclasses import dataclass

from wizardcoder.config import option, require
from wizardcoder.sandbox.config import SandboxConfig


@dataclass
class ScoreConfig(SandboxConfig):
    """params.yaml section `score`."""

    ks: list[int] = option(default_factory=lambda: [1, 10, 100],
                           help="pass@k values to report; those above the samples per task "
                                "are left out (pass@1 is always reported).")
    plus_memory_mb: int = option(
        4096, help="HumanEval+/MBPP+ differential tests: address-space limit per test set (MiB); "
                   "evalplus's 4 GiB by default, as some reference outputs alone need over "
                   "1 GiB (Mbpp/255).")
    plus_min_time_limit_s: float = option(
        1.0, help="HumanEval+/MBPP+: an input may take max(this, plus_time_factor x the "
                  "reference solution's time on it), as in evalplus.")
    plus_time_factor: float = option(4.0, help="See plus_min_time_limit_s.")

    def __post_init__(self):
        require(all(k >= 1 for k in self.ks), "score", "ks", "a list of integers >= 1")
        super().__post_init__()
        require(self.plus_memory_mb >= 64, "score", "plus_memory_mb", "at least 64 (MiB)")
        require(self.plus_min_time_limit_s > 0, "score", "plus_min_time_limit_s",
                "a positive number of seconds")
        require(self.plus_time_factor >= 1, "score", "plus_time_factor", "a number >= 1")
