"""Sandboxed scoring of code completions: sandbox (untrusted side isolation), harness (verdicts
from ``check`` functions), plus (HumanEval+ / MBPP+ base and plus inputs against reference
outputs, evalplus's rules), pass@k estimation. See :mod:`wizardcoder.scoring.sandbox` for the
threat model."""

from wizardcoder.scoring.harness import Verdict, check_sample, evaluate_samples
from wizardcoder.scoring.passk import estimate_pass_at_k, pass_at_k_summary
from wizardcoder.scoring.plus import DiffSettings
from wizardcoder.scoring.sandbox import SandboxLimits

__all__ = ["DiffSettings", "SandboxLimits", "Verdict", "check_sample", "evaluate_samples",
           "estimate_pass_at_k", "pass_at_k_summary"]
