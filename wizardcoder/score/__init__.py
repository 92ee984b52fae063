"""Stage `score`: sandboxed execution of a samples file and unbiased pass@k.

HumanEval runs each task's ``check`` in :mod:`wizardcoder.sandbox`; HumanEval+ / MBPP+
compare base and plus inputs against reference outputs (:mod:`~.plus`, evalplus's rules).
"""

from wizardcoder.score.passk import estimate_pass_at_k, pass_at_k_summary
from wizardcoder.score.plus import DiffSettings

__all__ = ["DiffSettings", "estimate_pass_at_k", "pass_at_k_summary"]
