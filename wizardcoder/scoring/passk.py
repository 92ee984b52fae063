"""Unbiased pass@k (Chen et al., 2021): 1 - C(n-c, k) / C(n, k) per task, averaged over tasks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def _pass_at_k(n: int, c: int, k: int) -> float:
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= correct <= samples, got correct={c}, samples={n}")
    if n < k:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) as a product of ratios each <= 1: no huge binomials, no overflow.
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def estimate_pass_at_k(num_samples: Sequence[int], num_correct: Sequence[int],
                       k: int) -> list[float]:
    """Per-task unbiased pass@k estimates."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(num_samples) != len(num_correct):
        raise ValueError("num_samples and num_correct differ in length")
    return [_pass_at_k(int(n), int(c), k) for n, c in zip(num_samples, num_correct, strict=True)]


def pass_at_k_summary(verdicts: list, ks: Sequence[int]) -> dict:
    """{"pass@k": mean over tasks, ...} for each k not above the fewest samples of any task,
    plus "tasks" and "samples" counts. Verdicts with plus tests (HumanEval+, MBPP+) also give
    "plus_pass@k", where a sample counts only if it passes base and plus tests (as evalplus
    reports HumanEval+ / MBPP+)."""
    per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    with_plus = bool(verdicts) and all(getattr(v, "plus_passed", None) is not None
                                       for v in verdicts)
    for verdict in verdicts:
        counts = per_task[verdict.task_id]
        counts[0] += 1
        counts[1] += bool(verdict.passed)
        counts[2] += bool(verdict.passed and getattr(verdict, "plus_passed", False))
    summary: dict = {}
    if per_task:
        fewest = min(c[0] for c in per_task.values())
        ns = [c[0] for c in per_task.values()]
        for prefix, column in (("", 1), ("plus_", 2)) if with_plus else (("", 1),):
            cs = [c[column] for c in per_task.values()]
            for k in sorted(set(ks)):
                if 1 <= k <= fewest:
                    scores = estimate_pass_at_k(ns, cs, k)
                    summary[f"{prefix}pass@{k}"] = sum(scores) / len(scores)
    summary["tasks"] = len(per_task)
    summary["samples"] = len(verdicts)
    return summary
