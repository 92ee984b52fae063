"""The sandbox keys of params.yaml section `score`: the limits, isolation, parallelism and
sandbox-error tolerance that every piece of generated code runs under.

Scoring reads them as part of its section (``ScoreConfig`` extends :class:`SandboxConfig`).
Merge's execution detector and evolve's verification have their own copy of these keys
(``merge.sandbox``, ``evolve.sandbox``: subclasses naming their place in ``SECTION``), so a
key only scoring reads never reruns evolution or merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wizardcoder.config import option, require
from wizardcoder.sandbox.pool import ISOLATION_MODES, SandboxLimits

SECTION = "score"


@dataclass
class SandboxConfig:
    """The sandbox keys of params.yaml section `score`."""

    SECTION: ClassVar[str] = SECTION  # where the keys live, for error messages

    workers: int = option(2, help="Samples executed in parallel.",
        affects_outputs=False)
    timeout_s: float = option(10.0, help="Wall-clock limit per sample (seconds).")
    cpu_s: float = option(10.0, help="CPU-time limit per sample (seconds).")
    memory_mb: int = option(1024, help="Memory limit (MiB): the address space of each of a "
                                        "sample's processes and, through its cgroup, its "
                                        "anonymous, shared and tmpfs pages together.")
    max_procs: int = option(32, help="Process-count limit per sample (its cgroup's pids.max; "
                                     "threads count).")
    tmp_mb: int = option(64, help="Size of the sample's tmpfs (/tmp, its cwd and the only "
                                  "writable place), MiB; counted in memory_mb too.")
    tmp_inodes: int = option(4096, help="Files and directories the sample's tmpfs can hold.")
    isolate_network: bool = option(True, help="Run samples in a network namespace with no "
                                             "interfaces (falls back loudly where unavailable).")
    isolation: str = option(
        "strict", help="strict: refuse to score, before any sample runs, when a sandbox layer "
                       "(user/mount/PID/network/IPC namespaces, the minimal root, the uid "
                       "separation, the seccomp filter, a per-sample memory bound: a cgroup, "
                       "or for Python samples one process) is unavailable, naming it and how "
                       "to enable it. "
                       "best_effort: score anyway with the layers that are active; they are "
                       "recorded in the metrics (`isolation`) and the MLflow run.")
    max_sandbox_errors: int = option(
        0, help="Samples whose sandbox failed (verdict sandbox_error: a worker that could not "
                "start, ...) that the stage accepts; above it the stage fails and writes "
                "nothing. Accepted ones are left out of pass@k's n, never counted as wrong.",
        affects_outputs=False)

    def __post_init__(self):
        require(self.workers >= 1, self.SECTION, "workers", "an integer >= 1")
        require(self.timeout_s > 0, self.SECTION, "timeout_s", "a positive number of seconds")
        require(self.memory_mb >= 64, self.SECTION, "memory_mb", "at least 64 (MiB)")
        require(self.tmp_mb >= 1, self.SECTION, "tmp_mb", "at least 1 (MiB)")
        require(self.tmp_inodes >= 16, self.SECTION, "tmp_inodes", "at least 16")
        require(self.isolation in ISOLATION_MODES, self.SECTION, "isolation",
                " or ".join(ISOLATION_MODES))
        require(self.max_sandbox_errors >= 0, self.SECTION, "max_sandbox_errors",
                "an integer >= 0")

    def limits(self) -> SandboxLimits:
        """The limits each sample runs under."""
        return SandboxLimits(timeout_s=self.timeout_s, cpu_s=self.cpu_s,
                             memory_mb=self.memory_mb, max_procs=self.max_procs,
                             tmp_mb=self.tmp_mb, tmp_inodes=self.tmp_inodes,
                             isolate_network=self.isolate_network, isolation=self.isolation)
