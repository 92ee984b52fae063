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


def judged(verdict, plus: bool = False) -> bool:
    """Whether a verdict says something about the model: a ``sandbox_error`` (the sandbox
    failed, the sample never ran properly) does not, so it is left out of pass@k's n instead
    of being counted as a wrong sample. With ``plus``, for the plus column (base and plus
    must both have run)."""
    if verdict.kind == "sandbox_error":
        return False
    return not plus or getattr(verdict, "plus_kind", None) != "sandbox_error"


def pass_at_k_summary(verdicts: list, ks: Sequence[int]) -> dict:
    """{"pass@k": mean over tasks, ...} for each k not above the fewest samples of any task,
    plus "tasks" and "samples" counts. Verdicts with plus tests (HumanEval+, MBPP+) also give
    "plus_pass@k", where a sample counts only if it passes base and plus tests (as evalplus
    reports HumanEval+ / MBPP+).

    ``sandbox_error`` verdicts are not judged samples (:func:`judged`): they are left out of
    n (the stage refuses to report at all above ``score.max_sandbox_errors``, 0 by default);
    a task left with no judged sample is left out of the mean and counted in
    "unjudged_tasks" (present only when not 0)."""
    with_plus = bool(verdicts) and all(getattr(v, "plus_passed", None) is not None
                                       for v in verdicts)
    columns = (("", False), ("plus_", True)) if with_plus else (("", False),)
    # per column: task -> [judged samples, correct samples]
    per_task: list[dict[str, list[int]]] = [defaultdict(lambda: [0, 0]) for _ in columns]
    tasks = set()
    for verdict in verdicts:
        tasks.add(verdict.task_id)
        for table, (_, plus) in zip(per_task, columns, strict=True):
            if judged(verdict, plus):
                counts = table[verdict.task_id]
                counts[0] += 1
                counts[1] += bool(verdict.passed and (not plus or verdict.plus_passed))
    summary: dict = {}
    unjudged = 0
    for table, (prefix, _) in zip(per_task, columns, strict=True):
        unjudged = max(unjudged, len(tasks) - len(table))
        if not table:
            continue
        fewest = min(n for n, _ in table.values())
        ns = [n for n, _ in table.values()]
        cs = [c for _, c in table.values()]
        for k in sorted(set(ks)):
            if 1 <= k <= fewest:
                scores = estimate_pass_at_k(ns, cs, k)
                summary[f"{prefix}pass@{k}"] = sum(scores) / len(scores)
    summary["tasks"] = len(tasks)
    summary["samples"] = len(verdicts)
    if unjudged:
        summary["unjudged_tasks"] = unjudged
    return summary
