"""params.yaml section `score`: the sandbox's limits and isolation, pass@k's k, and the
HumanEval+/MBPP+ settings."""

from __future__ import annotations

from dataclasses import dataclass

from wizardcoder.config import option, require


@dataclass
class ScoreConfig:
    """params.yaml section `score`."""

    ks: list[int] = option(default_factory=lambda: [1, 10, 100],
                           help="pass@k values to report; those above the samples per task "
                                "are left out (pass@1 is always reported).")
    workers: int = option(2, help="Samples executed in parallel.",
        affects_outputs=False)
    timeout_s: float = option(10.0, help="Wall-clock limit per sample (seconds).")
    cpu_s: float = option(10.0, help="CPU-time limit per sample (seconds).")
    memory_mb: int = option(1024, help="Address-space limit per sample (MiB).")
    max_procs: int = option(32, help="Process-count limit per sample.")
    isolate_network: bool = option(True, help="Run samples in a network namespace with no "
                                             "interfaces (falls back loudly where unavailable).")
    isolation: str = option(
        "strict", help="strict: refuse to score, before any sample runs, when a sandbox layer "
                       "(user/mount/PID/network/IPC namespaces, the minimal root, the uid "
                       "separation) is unavailable, naming it and how to enable it. "
                       "best_effort: score anyway with the layers that are active; they are "
                       "recorded in the metrics (`isolation`) and the MLflow run.")
    plus_memory_mb: int = option(
        4096, help="HumanEval+/MBPP+ differential tests: address-space limit per test set (MiB); "
                   "evalplus's 4 GiB by default, as some reference outputs alone need over "
                   "1 GiB (Mbpp/255).")
    plus_min_time_limit_s: float = option(
        1.0, help="HumanEval+/MBPP+: an input may take max(this, plus_time_factor x the "
                  "reference solution's time on it), as in evalplus.")
    plus_time_factor: float = option(4.0, help="See plus_min_time_limit_s.")
    max_sandbox_errors: int = option(
        0, help="Samples whose sandbox failed (verdict sandbox_error: a worker that could not "
                "start, ...) that the stage accepts; above it the stage fails and writes "
                "nothing. Accepted ones are left out of pass@k's n, never counted as wrong.",
        affects_outputs=False)

    def __post_init__(self):
        require(all(k >= 1 for k in self.ks), "score", "ks", "a list of integers >= 1")
        require(self.workers >= 1, "score", "workers", "an integer >= 1")
        require(self.timeout_s > 0, "score", "timeout_s", "a positive number of seconds")
        require(self.memory_mb >= 64, "score", "memory_mb", "at least 64 (MiB)")
        require(self.isolation in ("strict", "best_effort"), "score", "isolation",
                "strict or best_effort")
        require(self.plus_memory_mb >= 64, "score", "plus_memory_mb", "at least 64 (MiB)")
        require(self.plus_min_time_limit_s > 0, "score", "plus_min_time_limit_s",
                "a positive number of seconds")
        require(self.plus_time_factor >= 1, "score", "plus_time_factor", "a number >= 1")
        require(self.max_sandbox_errors >= 0, "score", "max_sandbox_errors",
                "an integer >= 0")
