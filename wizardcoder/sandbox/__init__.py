"""The sandbox every piece of generated code runs in (score, merge's execution detector,
evolve's verification): a zygote per limit set forks one isolated worker per sample
(:mod:`wizardcoder.sandbox.pool` holds the threat model), and :mod:`~.harness` turns a
program plus its ``check`` into a verdict."""

from wizardcoder.sandbox.harness import Verdict, check_sample, evaluate_samples
from wizardcoder.sandbox.pool import SandboxLimits

__all__ = ["SandboxLimits", "Verdict", "check_sample", "evaluate_samples"]
