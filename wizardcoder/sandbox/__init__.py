"""The sandbox every piece of generated code runs in (score, merge's execution detector,
evolve's verification): a zygote per limit set forks one isolated worker per sample
(:mod:`wizardcoder.sandbox.pool` holds the threat model), :mod:`~.harness` turns a program
plus its ``check`` into a verdict, :mod:`~.config` holds the settings (the sandbox keys of each
section that runs code: `score`, `evolve.sandbox`, `merge.sandbox`) and :mod:`~.session` a
stage's isolation check and sandbox-error budget."""

from wizardcoder.sandbox.config import SandboxConfig
from wizardcoder.sandbox.harness import Verdict, check_sample, evaluate_samples
from wizardcoder.sandbox.pool import SandboxLimits
from wizardcoder.sandbox.session import SandboxSession

__all__ = ["SandboxConfig", "SandboxLimits", "SandboxSession", "Verdict", "check_sample",
           "evaluate_samples"]
