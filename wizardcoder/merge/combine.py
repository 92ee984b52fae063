"""Merge seed + evolved rounds into one training set: decontaminate, dedupe, describe.

Rows are taken in order (seed first, then round 1, 2, ...). A row is removed when it belongs
to a held-out dev task, has no response, reproduces a benchmark task
(:mod:`wizardcoder.merge.contamination`: verbatim n-grams, TF-IDF against prompt + solution and
against the docstring alone, normalised code, execution against the task's tests), or
duplicates a row already kept that is not its own ancestor (:mod:`wizardcoder.merge.dedup`: evolved
chains stay whole). The report lists every removed row and, per benchmark task, what was
removed and the kept row that came closest, with its scores.

`baseline` picks what is trained on, so a grid can compare evolved with unevolved data
while train/generate/score stay the same: ``none`` (seed + rounds), ``seed_only`` (the seed
rows alone) or ``equal_size`` (the seed rows topped up with unevolved rows from the seed
pool until there are as many rows as the evolved merge has; see docs/merge.md, "Baselines"). The
held-out dev tasks (:mod:`wizardcoder.benchmarks.devset`) and their descendants never reach
training.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field

from wizardcoder.benchmarks.tasks import BenchTask, humaneval_tasks
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.merge import contamination, decontam, dedup
from wizardcoder.merge.config import MergeConfig
from wizardcoder.merge.decontam_exec import ExecRunner
from wizardcoder.rounds import METHODS, VERDICTS, round_columns, round_number

log = logging.getLogger(__name__)

REASONS = ("dev_holdout", "empty_output", "exact_duplicate", "near_duplicate",
           *contamination.DETECTORS)
DEDUP_REASONS = ("exact_duplicate", "near_duplicate")
# Words that signal an added requirement: their count per instruction is a cheap
# difficulty proxy that rises as rounds add constraints.
CONSTRAINT_TERMS = ("must", "should", "without", "only", "at most", "at least", "ensure",
                    "handle", "complexity", "o(", "constraint", "additionally", "also",
                    "not allowed", "efficient", "edge case")


def collect_rows(seed_rows: list[dict], rounds: dict[str, list[dict]]) -> list[dict]:
    """Seed rows then each round's new rows (carried parents are already in the list)."""
    merged = []
    for row in seed_rows:
        merged.append(_flat(row, 0))
    for key, rows in rounds.items():
        round_no = round_number(key)
        for row in rows:
            if not row.get("carried"):
                merged.append(_flat(row, round_no))
    return merged


def _flat(row: dict, round_no: int) -> dict:
    """Training row with flat lineage columns (Arrow-friendly for `datasets`)."""
    for name in ("id", "instruction"):
        if not isinstance(row.get(name), str):
            raise DataError(f"round {round_no}", None, name, f"missing in row {row!r:.120}")
    lineage = row.get("lineage") or {}
    return {
        "id": row["id"],
        "instruction": row["instruction"],
        "input": row.get("input", ""),
        "output": row.get("output", ""),
        "round": round_no,
        "method": lineage.get("method") or "",
        "seed_id": lineage.get("seed_id") or row["id"],
        "parent_id": lineage.get("parent_id") or "",
        "model": lineage.get("model") or "",
        "lineage": json.dumps(lineage, sort_keys=True),
    }


@dataclass
class Holdout:
    """Rows never to train on: seed ids (lineage) and tasks to decontaminate against."""

    seed_ids: set[str] = field(default_factory=set)
    tasks: list[BenchTask] = field(default_factory=list)


def dev_holdout() -> Holdout:
    """The bundled seed_dev tasks (:mod:`wizardcoder.benchmarks.devset`) as a holdout."""
    from wizardcoder.benchmarks import devset

    tasks = devset.seed_dev_tasks()
    return Holdout({t["seed_id"] for t in tasks.values()},
                   humaneval_tasks(enumerate(tasks.values(), start=1),
                                   f"wizardcoder/resources/{devset.DEV_RESOURCE}", "seed_dev"))


@dataclass
class _Cleaned:
    rows_in: int
    final: list[dict]
    final_idx: list[int]   # positions in scan.rows
    removed: list[dict]
    scan: contamination.Scan


def tokens_estimate(rows: list[dict]) -> int:
    """Characters / 4 over instruction, input and output: the usual rough token count."""
    return sum(len(r["instruction"]) + len(r["input"]) + len(r["output"]) for r in rows) // 4


def _clean(rows: list[dict], config: MergeConfig, tasks: list[BenchTask], holdout: Holdout,
           runner: ExecRunner | None) -> _Cleaned:
    """Drop held-out, empty, contaminated and duplicate rows; removals in row order."""
    removed: dict[int, dict] = {}
    eligible, positions = [], []
    for pos, row in enumerate(rows):
        if row["seed_id"] in holdout.seed_ids:
            removed[pos] = {"id": row["id"], "round": row["round"], "reason": "dev_holdout"}
        elif config.drop_empty_output and not row["output"].strip():
            removed[pos] = {"id": row["id"], "round": row["round"], "reason": "empty_output"}
        else:
            eligible.append(row)
            positions.append(pos)
    scan = contamination.scan(eligible, tasks + holdout.tasks, config.decontam_code_min_tokens)
    hits = contamination.detect(scan, config, runner)
    clean = [i for i, hit in enumerate(hits) if hit is None]
    for i, hit in enumerate(hits):
        if hit is not None:
            row = eligible[i]
            removed[positions[i]] = {"id": row["id"], "round": row["round"], **hit}
    # Only rows that survive decontamination count as kept for the duplicate sweep.
    texts = [contamination.row_text(eligible[i]) for i in clean]
    near = (dedup.near_pairs(scan.train_m[clean], config.near_dup_threshold)
            if config.near_dup_threshold < 1.0 and clean else {})
    verdicts = dedup.sweep([eligible[i] for i in clean], texts, near)
    final_idx = []
    for i, verdict in zip(clean, verdicts, strict=True):
        if verdict.reason is None:
            final_idx.append(i)
        else:
            row = eligible[i]
            removed[positions[i]] = {"id": row["id"], "round": row["round"],
                                     "reason": verdict.reason,
                                     "duplicate_of": verdict.duplicate_of, "score": verdict.score}
    return _Cleaned(len(rows), [eligible[i] for i in final_idx], final_idx,
                    [removed[p] for p in sorted(removed)], scan)


def _equal_size(seed_rows: list[dict], pool: list[dict], target: int, config: MergeConfig,
                tasks: list[BenchTask], holdout: Holdout,
                runner: ExecRunner | None) -> tuple[_Cleaned, dict]:
    """Seed rows + the first unevolved pool rows that bring the clean set to ``target`` rows.

    Cleaning the extra rows can remove some, so rows are added until the clean set reaches
    the target or the pool runs out (then the set is short and ``shortfall_rows`` says so).
    """
    base = collect_rows(seed_rows, {})
    taken = {r["id"] for r in base} | holdout.seed_ids
    extras = [_flat(r, 0) for r in pool if r["id"] not in taken]
    take = max(0, target - len(base))
    while True:
        cleaned = _clean(base + extras[:take], config, tasks, holdout, runner)
        deficit = target - len(cleaned.final)
        if deficit <= 0 or take >= len(extras):
            break
        take = min(len(extras), take + deficit)
    # Adding rows changes TF-IDF weights, so an earlier row can come back: cut to the target.
    cleaned.final, cleaned.final_idx = cleaned.final[:target], cleaned.final_idx[:target]
    info = {"target_rows": target, "pool_rows": len(extras),
            "extra_rows": sum(1 for r in cleaned.final if r["id"] not in taken),
            "shortfall_rows": max(0, target - len(cleaned.final))}
    return cleaned, info


def merge(seed_rows: list[dict], rounds: dict[str, list[dict]], config: MergeConfig,
          pool: list[dict] | None = None, holdout: Holdout | None = None,
          tasks: list[BenchTask] | None = None,
          runner: ExecRunner | None = None) -> tuple[list[dict], dict, list[dict], dict]:
    """Returns (training rows, metrics, per-round plot rows, decontamination report).

    ``tasks``: the benchmark tasks to decontaminate against (read from the files the config
    names, :func:`wizardcoder.benchmarks.tasks.load_tasks`); ``runner``: the sandbox for the
    execution detector (None: not run). ``pool`` (all seed rows, in the seed stage's order)
    is needed for ``equal_size``; ``holdout`` lists the dev tasks that must not be trained on.
    """
    holdout = holdout or Holdout()
    tasks = list(tasks or [])
    evolved_rows = collect_rows(seed_rows, rounds)
    extra_metrics: dict = {}
    used_rounds: dict[str, list[dict]] = {}
    if config.baseline == "none":
        used_rounds = rounds
        cleaned = _clean(evolved_rows, config, tasks, holdout, runner)
    elif config.baseline == "seed_only":
        cleaned = _clean(collect_rows(seed_rows, {}), config, tasks, holdout, runner)
    else:
        if pool is None:
            raise ConfigError("merge.baseline=equal_size needs the seed pool (all seed rows)")
        evolved = _clean(evolved_rows, config, tasks, holdout, runner)
        cleaned, extra_metrics = _equal_size(seed_rows, pool, len(evolved.final), config,
                                             tasks, holdout, runner)
        extra_metrics["target_tokens_est"] = tokens_estimate(evolved.final)
    final, removed, scan = cleaned.final, cleaned.removed, cleaned.scan
    report = _report(config, cleaned, runner)
    train_m = scan.train_m[cleaned.final_idx] if final else None
    per_round = round_statistics(final, used_rounds, train_m,
                                 scan.prompt_m if scan.tasks else None, removed)
    reasons = Counter(r["reason"] for r in removed)
    dedup_by_round = Counter(r["round"] for r in removed if r["reason"] in DEDUP_REASONS)
    metrics = {"rows": len(final), "rows_in": cleaned.rows_in, "removed": len(removed),
               **{f"removed_{k}": reasons.get(k, 0) for k in REASONS},
               # Evolved rows (round >= 1) that dedup removed, per round.
               "dedup_removed": {key: dedup_by_round.get(round_number(key), 0)
                                 for key in used_rounds},
               "execution_runs": runner.runs if runner is not None else 0,
               "execution_sandbox_errors": runner.sandbox_errors if runner is not None else 0,
               "rounds": len(rounds), "tokens_est": tokens_estimate(final), **extra_metrics}
    if extra_metrics:
        report["equal_size"] = extra_metrics
    if runner is not None:
        report["execution_sandbox"] = runner.isolation  # None: no row needed running
    return final, metrics, per_round, report


def _report(config: MergeConfig, cleaned: _Cleaned, runner: ExecRunner | None) -> dict:
    """Per benchmark task: rows removed (detector, scores) and the closest kept row."""
    scan = cleaned.scan
    closest = contamination.closest_kept(scan, cleaned.final_idx, config, runner)
    by_task: dict[str, list[dict]] = {}
    for record in cleaned.removed:
        if record.get("benchmark_task"):
            entry = {k: v for k, v in record.items() if k != "benchmark_task"}
            by_task.setdefault(record["benchmark_task"], []).append(entry)
    tasks = [{"task_id": task.task_id, "benchmark": task.benchmark,
              "removed": by_task.get(task.task_id, []),
              "closest_kept": {k: v for k, v in near.items() if k != "task_id"}}
             for task, near in zip(scan.tasks, closest, strict=True)]
    names = list(dict.fromkeys(t.benchmark for t in scan.tasks))
    return {"baseline": config.baseline, "benchmarks": names, "thresholds": config.thresholds(),
            "removed": cleaned.removed,
            # Compact view (task, closest kept row, TF-IDF cosine to prompt + solution).
            "closest_training_row": [{"task_id": c["task_id"], "closest_row": c["closest_row"],
                                      "cosine": c.get("prompt_cosine")} for c in closest],
            "tasks": tasks}


def round_statistics(final: list[dict], rounds: dict[str, list[dict]], matrix,
                     bench_matrix, removed: list[dict] | None = None) -> list[dict]:
    """One record per round (0 = seed) for DVC plots and MLflow."""
    import numpy as np

    dedup_by_round = Counter(r["round"] for r in removed or () if r["reason"] in DEDUP_REASONS)
    stats = []
    round_numbers = [0] + [round_number(k) for k in rounds]
    for key, round_no in zip([None, *rounds], round_numbers, strict=True):
        idx = [i for i, r in enumerate(final) if r["round"] == round_no]
        part = [final[i] for i in idx]
        # DVC plots read a list of records only when every record has the same keys.
        record = {"round": round_no, "rows": len(part), "evolved_kept": 0, "evolved_dropped": 0,
                  **{f"dropped_{verdict}": 0 for verdict in VERDICTS},
                  **{f"kept_{method}": 0 for method in METHODS},
                  "dedup_removed": dedup_by_round.get(round_no, 0),
                  "diversity_mean_cosine": None, "benchmark_similarity": None,
                  **round_columns([], round_no)}  # evolve.verify: tests
        if key is not None:
            record.update(round_columns(rounds[key], round_no))
            evolved = [r for r in rounds[key] if not r.get("carried")]
            carried = [r for r in rounds[key] if r.get("carried_in_round") == round_no]
            record["evolved_kept"] = len(evolved)
            record["evolved_dropped"] = len(carried)
            rule_counts = Counter(r.get("carried_rule") for r in carried)
            for verdict in VERDICTS:
                record[f"dropped_{verdict}"] = rule_counts.get(verdict, 0)
            method_kept = Counter((r.get("lineage") or {}).get("method") for r in evolved)
            for method in METHODS:
                record[f"kept_{method}"] = method_kept.get(method, 0)
        instr_words = [len(r["instruction"].split()) for r in part]
        record["instruction_words"] = round(float(np.mean(instr_words)), 2) if part else 0.0
        record["response_words"] = (round(float(np.mean([len(r["output"].split())
                                                         for r in part])), 2) if part else 0.0)
        record["constraint_terms"] = (round(float(np.mean(
            [sum(r["instruction"].lower().count(t) for t in CONSTRAINT_TERMS) for r in part])),
            3) if part else 0.0)
        if matrix is not None and idx:
            sub = matrix[idx]
            record["diversity_mean_cosine"] = round(decontam.mean_pairwise_cosine(sub), 4)
            if bench_matrix is not None:
                best, _ = decontam.cross_cosine(sub, bench_matrix)
                record["benchmark_similarity"] = round(float(best.mean()), 4)
        stats.append(record)
    return stats
