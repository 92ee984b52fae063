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
    # MultiPL-E (issue 19): each program's compile and run steps have budgets of their own.
    multipl_e_compile_timeout_s: float = option(
        30.0, help="MultiPL-E: wall-clock limit of the compile step (g++, javac, tsc, rustc; "
                   "seconds). Over it: SyntaxError (Timeout for Rust), as in MultiPL-E.")
    multipl_e_compile_memory_mb: int = option(
        2048, help="MultiPL-E: memory limit of each compiler process (MiB; address space, or "
                   "private writable memory for the JVM, node and Go, which reserve large "
                   "virtual ranges).")
    multipl_e_run_timeout_s: float = option(
        15.0, help="MultiPL-E: wall-clock limit of the run step (seconds; MultiPL-E's 15 s; "
                   "`go test` builds and runs in this one step). Over it: Timeout.")
    multipl_e_run_memory_mb: int = option(
        1024, help="MultiPL-E: memory limit of each process of the run step (MiB).")
    multipl_e_max_procs: int = option(
        256, help="MultiPL-E: processes and threads per program (JVMs, Go and node start "
                  "dozens of threads).")

    def __post_init__(self):
        require(all(k >= 1 for k in self.ks), "score", "ks", "a list of integers >= 1")
        super().__post_init__()
        require(self.plus_memory_mb >= 64, "score", "plus_memory_mb", "at least 64 (MiB)")
        require(self.plus_min_time_limit_s > 0, "score", "plus_min_time_limit_s",
                "a positive number of seconds")
        require(self.plus_time_factor >= 1, "score", "plus_time_factor", "a number >= 1")
        for name in ("multipl_e_compile_timeout_s", "multipl_e_run_timeout_s"):
            require(getattr(self, name) > 0, "score", name, "a positive number of seconds")
        for name in ("multipl_e_compile_memory_mb", "multipl_e_run_memory_mb"):
            require(getattr(self, name) >= 64, "score", name, "at least 64 (MiB)")
        require(self.multipl_e_max_procs >= 1, "score", "multipl_e_max_procs", "an integer >= 1")
