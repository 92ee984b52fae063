"""Merge seed + evolved rounds into one training set: dedupe, decontaminate, describe.

Rows are taken in order (seed first, then round 1, 2, ...), so when two rows are
near-duplicates the earlier, less evolved one is kept. A row is contaminated when it
shares a word n-gram with a benchmark prompt or solution, or when its instruction's
TF-IDF cosine to a benchmark prompt passes a threshold. The report lists every removed
row and, for every benchmark task, the closest training row that was kept.

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

from wizardcoder import decontam
from wizardcoder.config import check_choice, option, require
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.evolve.filters import RULES
from wizardcoder.evolve.prompts import METHODS

log = logging.getLogger(__name__)

BENCHMARKS = ("humaneval", "mbpp")
BASELINES = ("none", "seed_only", "equal_size")
REASONS = ("dev_holdout", "empty_output", "exact_duplicate", "near_duplicate", "ngram_overlap",
           "tfidf_cosine")
# Words that signal an added requirement: their count per instruction is a cheap
# difficulty proxy that rises as rounds add constraints.
CONSTRAINT_TERMS = ("must", "should", "without", "only", "at most", "at least", "ensure",
                    "handle", "complexity", "o(", "constraint", "additionally", "also",
                    "not allowed", "efficient", "edge case")


@dataclass
class MergeConfig:
    """params.yaml section `merge`."""

    near_dup_threshold: float = option(
        0.9, help="TF-IDF cosine at or above which a row is a near-duplicate of an earlier one "
                  "(1.0 = exact duplicates only).")
    decontam_benchmarks: list[str] = option(
        default_factory=lambda: list(BENCHMARKS),
        help="Benchmarks to decontaminate against. MBPP needs evalplus's MbppPlus file on disk "
             "(MBPP_OVERRIDE_PATH or ~/.cache/evalplus); without it MBPP is skipped and the "
             "report says so.")
    decontam_ngram: int = option(
        10, help="Word n-gram length: a shared n-gram with a benchmark prompt+solution removes "
                 "the row (0 disables).")
    decontam_cosine: float = option(
        0.8, help="TF-IDF cosine of instruction vs benchmark prompt at or above which a row is "
                  "removed (1.0 disables).")
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
                   "evolved from them and rows overlapping them (same n-gram / cosine rules as "
                   "the benchmarks), so round selection is scored on unseen tasks.")

    def __post_init__(self):
        check_choice("merge", "baseline", self.baseline, BASELINES)
        require(0 < self.near_dup_threshold <= 1, "merge", "near_dup_threshold",
                "a cosine in (0, 1]")
        require(0 < self.decontam_cosine <= 1, "merge", "decontam_cosine", "a cosine in (0, 1]")
        require(self.decontam_ngram >= 0, "merge", "decontam_ngram", "an integer >= 0")
        for name in self.decontam_benchmarks:
            if name not in BENCHMARKS:
                raise ConfigError(f"merge.decontam_benchmarks: unknown benchmark {name!r}; "
                                  f"valid: {', '.join(BENCHMARKS)}")


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


def _text(row: dict) -> str:
    return f"{row['instruction']}\n{row['input']}".strip()


@dataclass
class Holdout:
    """Rows never to train on: seed ids (lineage) and texts to decontaminate against."""

    seed_ids: set[str] = field(default_factory=set)
    texts: dict[str, str] = field(default_factory=dict)


@dataclass
class _Cleaned:
    rows_in: int
    final: list[dict]
    final_idx: list[int]
    removed: list[dict]
    train_m: object
    bench_m: object
    bench_ids: list[str]


def tokens_estimate(rows: list[dict]) -> int:
    """Characters / 4 over instruction, input and output: the usual rough token count."""
    return sum(len(r["instruction"]) + len(r["input"]) + len(r["output"]) for r in rows) // 4


def _benchmark_texts(config: MergeConfig, holdout: Holdout) -> tuple[dict[str, str], list[str]]:
    texts: dict[str, str] = {}
    skipped = []
    for name in config.decontam_benchmarks:
        prompts = decontam.benchmark_prompts(name)
        if prompts is None:
            log.warning("merge: %s prompts not found on disk; decontamination against %s "
                        "skipped (see merge.decontam_benchmarks)", name, name)
            skipped.append(name)
            continue
        texts.update(prompts)
    texts.update(holdout.texts)
    return texts, skipped


def _clean(rows: list[dict], config: MergeConfig, bench_texts: dict[str, str],
           holdout: Holdout) -> _Cleaned:
    """Drop held-out, empty, duplicate and contaminated rows (earlier rows win)."""
    removed: list[dict] = []
    kept = []
    seen_exact: set[str] = set()
    for row in rows:
        if row["seed_id"] in holdout.seed_ids:
            removed.append({"id": row["id"], "round": row["round"], "reason": "dev_holdout"})
            continue
        if config.drop_empty_output and not row["output"].strip():
            removed.append({"id": row["id"], "round": row["round"], "reason": "empty_output"})
            continue
        key = decontam.normalise(_text(row))
        if key in seen_exact:
            removed.append({"id": row["id"], "round": row["round"], "reason": "exact_duplicate"})
            continue
        seen_exact.add(key)
        kept.append(row)

    bench_ids = list(bench_texts)
    texts = [_text(r) for r in kept]
    matrix = decontam.tfidf_matrix(texts + [bench_texts[t] for t in bench_ids] or [""])
    train_m, bench_m = matrix[: len(kept)], matrix[len(kept):]

    near = decontam.max_cosine_to_earlier(train_m) if kept else []
    bench_best, bench_arg = (decontam.cross_cosine(train_m, bench_m) if bench_ids and kept
                             else ([0.0] * len(kept), [0] * len(kept)))
    bench_grams = ({tid: decontam.ngrams(text, config.decontam_ngram)
                    for tid, text in bench_texts.items()} if config.decontam_ngram else {})
    final, final_idx = [], []
    for i, row in enumerate(kept):
        if config.near_dup_threshold < 1.0 and near[i] >= config.near_dup_threshold:
            removed.append({"id": row["id"], "round": row["round"], "reason": "near_duplicate",
                            "score": round(float(near[i]), 4)})
            continue
        hit = _ngram_hit(row, bench_grams, config.decontam_ngram)
        if hit:
            removed.append({"id": row["id"], "round": row["round"], "reason": "ngram_overlap",
                            "benchmark_task": hit})
            continue
        if bench_ids and bench_best[i] >= config.decontam_cosine:
            removed.append({"id": row["id"], "round": row["round"], "reason": "tfidf_cosine",
                            "benchmark_task": bench_ids[bench_arg[i]],
                            "score": round(float(bench_best[i]), 4)})
            continue
        final.append(row)
        final_idx.append(i)
    return _Cleaned(len(rows), final, final_idx, removed, train_m, bench_m, bench_ids)


def _equal_size(seed_rows: list[dict], pool: list[dict], target: int, config: MergeConfig,
                bench_texts: dict[str, str], holdout: Holdout) -> tuple[_Cleaned, dict]:
    """Seed rows + the first unevolved pool rows that bring the clean set to ``target`` rows.

    Cleaning the extra rows can remove some, so rows are added until the clean set reaches
    the target or the pool runs out (then the set is short and ``shortfall_rows`` says so).
    """
    base = collect_rows(seed_rows, {})
    taken = {r["id"] for r in base} | holdout.seed_ids
    extras = [_flat(r, 0) for r in pool if r["id"] not in taken]
    take = max(0, target - len(base))
    while True:
        cleaned = _clean(base + extras[:take], config, bench_texts, holdout)
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
          pool: list[dict] | None = None,
          holdout: Holdout | None = None) -> tuple[list[dict], dict, list[dict], dict]:
    """Returns (training rows, metrics, per-round plot rows, decontamination report).

    ``pool`` (all seed rows, in the seed stage's order) is needed for ``equal_size``;
    ``holdout`` lists the dev tasks that must not be trained on.
    """
    holdout = holdout or Holdout()
    bench_texts, skipped = _benchmark_texts(config, holdout)
    evolved_rows = collect_rows(seed_rows, rounds)
    extra_metrics: dict = {}
    used_rounds: dict[str, list[dict]] = {}
    if config.baseline == "none":
        used_rounds = rounds
        cleaned = _clean(evolved_rows, config, bench_texts, holdout)
    elif config.baseline == "seed_only":
        cleaned = _clean(collect_rows(seed_rows, {}), config, bench_texts, holdout)
    else:
        if pool is None:
            raise ConfigError("merge.baseline=equal_size needs the seed pool (all seed rows)")
        evolved = _clean(evolved_rows, config, bench_texts, holdout)
        cleaned, extra_metrics = _equal_size(seed_rows, pool, len(evolved.final), config,
                                             bench_texts, holdout)
        extra_metrics["target_tokens_est"] = tokens_estimate(evolved.final)
    final, final_idx, removed = cleaned.final, cleaned.final_idx, cleaned.removed
    train_m, bench_m, bench_ids = cleaned.train_m, cleaned.bench_m, cleaned.bench_ids

    closest = []
    if bench_ids and final_idx:
        best, arg = decontam.cross_cosine(bench_m, train_m[final_idx])
        for j, tid in enumerate(bench_ids):
            closest.append({"task_id": tid, "closest_row": final[arg[j]]["id"],
                            "cosine": round(float(best[j]), 4)})
    benchmarks = [b for b in config.decontam_benchmarks if b not in skipped]
    report = {"baseline": config.baseline, "removed": removed,
              "closest_training_row": closest,
              "benchmarks": benchmarks + (["seed_dev"] if holdout.texts else []),
              "skipped_benchmarks": skipped, **({"equal_size": extra_metrics}
                                                if extra_metrics else {})}
    per_round = round_statistics(final, used_rounds, train_m[final_idx] if final_idx else None,
                                 bench_m if bench_ids else None)
    reasons = Counter(r["reason"] for r in removed)
    metrics = {"rows": len(final), "rows_in": cleaned.rows_in, "removed": len(removed),
               **{f"removed_{k}": reasons.get(k, 0) for k in REASONS},
               "rounds": len(rounds), "tokens_est": tokens_estimate(final), **extra_metrics}
    return final, metrics, per_round, report


def _ngram_hit(row: dict, bench_grams: dict, n: int) -> str | None:
    if not n or not bench_grams:
        return None
    grams = decontam.ngrams(f"{row['instruction']}\n{row['input']}\n{row['output']}", n)
    for tid, bench in bench_grams.items():
        if grams & bench:
            return tid
    return None


def round_statistics(final: list[dict], rounds: dict[str, list[dict]], matrix,
                     bench_matrix) -> list[dict]:
    """One record per round (0 = seed) for DVC plots and MLflow."""
    import numpy as np

    stats = []
    round_numbers = [0] + [int(k[1:]) for k in rounds]
    for key, round_no in zip([None, *rounds], round_numbers, strict=True):
        idx = [i for i, r in enumerate(final) if r["round"] == round_no]
        part = [final[i] for i in idx]
        # DVC plots read a list of records only when every record has the same keys.
        record = {"round": round_no, "rows": len(part), "evolved_kept": 0, "evolved_dropped": 0,
                  **{f"dropped_{rule}": 0 for rule in RULES},
                  **{f"kept_{method}": 0 for method in METHODS},
                  "diversity_mean_cosine": None, "benchmark_similarity": None}
        if key is not None:
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
