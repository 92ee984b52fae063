"""95% intervals of pass@k: a percentile bootstrap over tasks (any k), and Wilson's interval
for greedy pass@1 (one Bernoulli trial per task).

The score stages put the bootstrap bounds in their headline metrics (``pass@1_low``,
``pass@1_high``); ``wizardcoder report`` shows both. The bootstrap is seeded: the same
results give the same bounds (the metrics files are byte-identical for identical inputs).
"""

from __future__ import annotations

import math
import random

from wizardcoder.score.passk import estimate_pass_at_k


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def passk_with_ci(results: list[dict], ks: list[int], n_boot: int = 2000, seed: int = 0,
                  plus: bool = False) -> dict[int, dict]:
    """Unbiased pass@k per task, its mean, and a 95% percentile bootstrap over tasks
    (``plus``: a sample passes only if it passes the base and the plus tests)."""
    per_task: dict[str, list[int]] = {}
    for row in results:
        counts = per_task.setdefault(row["task_id"], [0, 0])
        counts[0] += 1
        counts[1] += bool(row.get("passed") and (row.get("plus_passed") or not plus))
    if not per_task:
        return {}
    ns, cs = [n for n, _ in per_task.values()], [c for _, c in per_task.values()]
    rng, out = random.Random(seed), {}
    for k in sorted(set(ks)):
        if k > min(ns):
            continue
        scores = estimate_pass_at_k(ns, cs, k)
        t = len(scores)
        means = sorted(sum(scores[rng.randrange(t)] for _ in range(t)) / t
                       for _ in range(n_boot))
        entry = {"value": sum(scores) / t, "low": means[int(0.025 * (n_boot - 1))],
                 "high": means[int(math.ceil(0.975 * (n_boot - 1)))], "tasks": t,
                 "method": f"bootstrap over {t} tasks"}
        if k == 1 and max(ns) == 1:  # greedy: one Bernoulli trial per task
            entry["wilson"] = wilson(sum(cs), t)
        out[k] = entry
    return out


def headline(summary: dict, results: list[dict], prefix: str = "",
             with_benchmark: bool = True) -> dict:
    """The figures of a scored set people compare (``metrics/score.json``; the dev set's,
    ``metrics/dev_score.json``, with ``prefix`` ``dev_`` so ``dvc exp show`` prints every
    column without a file prefix): the benchmark, each pass@k and plus_pass@k of ``summary``
    with its 95% bootstrap bounds (``pass@1_low``, ``pass@1_high``) over the judged
    ``results`` rows (sandbox errors are left out of n, as in pass@k). ``with_benchmark``
    False: no benchmark key (a file with an entry per benchmark, named after it)."""
    judged = [r for r in results if r.get("kind") != "sandbox_error"]
    out: dict = {f"{prefix}benchmark": summary.get("benchmark")} if with_benchmark else {}
    for plus in (False, True):
        name = "plus_pass@" if plus else "pass@"
        ks = sorted(int(k[len(name):]) for k in summary if k.startswith(name))
        if not ks:
            continue
        rows = [r for r in judged if not plus or r.get("plus_kind") != "sandbox_error"]
        bounds = passk_with_ci(rows, ks, plus=plus)
        for k in ks:
            out[f"{prefix}{name}{k}"] = summary[f"{name}{k}"]
            if k in bounds:
                out[f"{prefix}{name}{k}_low"] = bounds[k]["low"]
                out[f"{prefix}{name}{k}_high"] = bounds[k]["high"]
    return out
