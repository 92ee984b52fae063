"""A stage's use of the sandbox: its isolation checked once before the first sample, and the
runs the sandbox itself failed counted against ``score.max_sandbox_errors`` over the stage.

Score, merge's execution detector and evolve's verification each hold one
:class:`SandboxSession`. A run whose sandbox failed (verdict ``sandbox_error``: a worker that
could not start...) says nothing about the code: a stage accepts up to
``max_sandbox_errors`` of them and stops (ExternalError, exit 2, nothing written) at the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wizardcoder.errors import ExternalError
from wizardcoder.sandbox.config import SandboxConfig
from wizardcoder.sandbox.harness import Verdict
from wizardcoder.sandbox.pool import SandboxLimits, active_isolation

SANDBOX_ERROR = "sandbox_error"


def sandbox_failed(result) -> bool:
    """Whether the sandbox itself failed on ``result`` (a Verdict, in its base or plus tests,
    or any result with a ``kind``)."""
    return result.kind == SANDBOX_ERROR or getattr(result, "plus_kind", None) == SANDBOX_ERROR


@dataclass
class SandboxSession:
    """Where a stage runs code: the `score` section's limits, isolation and workers."""

    limits: SandboxLimits
    workers: int = 2
    max_sandbox_errors: int = 0    # score.max_sandbox_errors
    sandbox_errors: int = 0        # runs the sandbox itself failed, so far
    isolation: dict | None = None  # the layers active, once checked

    @classmethod
    def from_config(cls, config: SandboxConfig):
        return cls(config.limits(), config.workers,
                   max_sandbox_errors=config.max_sandbox_errors)

    def check_isolation(self) -> dict:
        """The active layers, checked on the first call: strict isolation refuses (exit 2)
        when a layer is missing."""
        if self.isolation is None:
            self.isolation = active_isolation(self.limits)
        return self.isolation

    def evaluate(self, problems: dict[str, dict], samples: list[dict]) -> list[Verdict]:
        """Each problem's ``check`` against the samples (in parallel), once the isolation is
        checked; verdicts in sample order."""
        from wizardcoder.sandbox import evaluate_samples  # looked up here: tests replace it

        self.check_isolation()
        return evaluate_samples(problems, samples, self.limits, workers=self.workers,
                                progress=False)

    def charge(self, results: Sequence, refusal: Callable[[list], str]) -> None:
        """Count the ``results`` whose sandbox failed; once more than ``max_sandbox_errors``
        over the session, raise ExternalError(``refusal(those of this batch)``)."""
        failed = [r for r in results if sandbox_failed(r)]
        self.sandbox_errors += len(failed)
        if self.sandbox_errors > self.max_sandbox_errors:
            raise ExternalError(refusal(failed))
