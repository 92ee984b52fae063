"""Execution-based decontamination: a training row that passes a benchmark task's tests.

Text and code similarity miss a row that solves a task under another wording and other code.
Any row whose response defines a function named like a task's entry point is run against
that task's own tests, in the scoring sandbox and the way `score` runs a sample: the program
is built by :func:`wizardcoder.sanitize.sanitize` (the row's entry point, what it
needs and the prompt's imports and helpers), then :func:`wizardcoder.sandbox.evaluate_samples`
runs the benchmark's ``check`` against it under the `score` section's sandbox settings
(:class:`wizardcoder.sandbox.SandboxSession`), in parallel.
A pass flags the row.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from wizardcoder.benchmarks.problems import harness_job
from wizardcoder.benchmarks.tasks import BenchTask
from wizardcoder.sandbox import SandboxSession

log = logging.getLogger(__name__)


@dataclass
class ExecJob:
    row_id: str
    task: BenchTask
    output: str  # the row's response, as trained on

    def key(self) -> tuple[str, str, str]:
        digest = hashlib.sha256(self.output.encode("utf-8", "surrogatepass")).hexdigest()
        return self.row_id, self.task.task_id, digest


@dataclass
class ExecRunner(SandboxSession):
    """Runs jobs in the sandbox; remembers verdicts so repeated cleaning runs each job once."""

    results: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)
    runs: int = 0

    def run(self, jobs: list[ExecJob]) -> list[tuple[str, str]]:
        """(kind, detail) per job, in job order; kind "passed" means the row solves the task."""
        from wizardcoder.sanitize import sanitize

        todo = [job for job in jobs if job.key() not in self.results]
        todo = list({job.key(): job for job in todo}.values())
        if todo:
            self.check_isolation()
            problems, samples = {}, []
            for job in todo:
                try:
                    program = sanitize(job.output, job.task.entry_point,
                                       job.task.problem["prompt"])
                except (ValueError, RecursionError, MemoryError) as exc:
                    program = f"raise SystemExit({str(exc)[:200]!r})\n"
                # MBPP's test_setup_code runs after the program, as when scoring
                problems[job.task.task_id], program = harness_job(job.task.problem, program)
                samples.append({"task_id": job.task.task_id, "solution": program})
            log.info("merge: running %d training rows against the benchmark tests that share "
                     "their function name", len(todo))
            verdicts = self.evaluate(problems, samples)
            self.runs += len(todo)
            for job, verdict in zip(todo, verdicts, strict=True):
                self.results[job.key()] = (verdict.kind, verdict.detail)
            # A row the sandbox could not run was not checked: kept silently, it could be a
            # contaminated one. Same tolerance as score.
            self.charge(verdicts, lambda failed: (
                f"merge: the sandbox failed to run {self.sandbox_errors} training rows "
                f"against benchmark tests (score.max_sandbox_errors = "
                f"{self.max_sandbox_errors}); first: {failed[0].task_id}: {failed[0].detail}"))
        return [self.results[job.key()] for job in jobs]
