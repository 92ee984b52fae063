"""Stage `merge`: seed + evolved rounds -> deduplicated, decontaminated training set.

    python -m stages.merge --seed data/seed.jsonl --evolved-dir data/evolved \
        --out data/merged/train.jsonl --report data/merged/decontamination.json \
        --metrics metrics/merge.json --details metrics/details/merge.json \
        --plots metrics/rounds.json   # and metrics/rounds_verify.json beside it

Reads params `merge` (with `merge.sandbox`, the limits and workers of the execution
detector), `rounds` and, for `merge.baseline: equal_size`, `seed` (the pool of unevolved rows is the
seed source without `seed.limit`). The benchmark files are read from the paths `merge` names;
every input is checked before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from wizardcoder.benchmarks import tasks as benchmark_tasks
from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.errors import DataError
from wizardcoder.headline import write_metrics
from wizardcoder.jsonl import read_jsonl, write_json, write_jsonl
from wizardcoder.merge.combine import Holdout, dev_holdout, merge
from wizardcoder.merge.config import MergeConfig
from wizardcoder.merge.decontam_exec import ExecRunner
from wizardcoder.rounds import load_rounds, split_verification
from wizardcoder.seed.config import SeedConfig
from wizardcoder.seed.seeds import load_seeds
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)
BENCHMARK_DIR = "data/benchmarks"  # a dep of the merge stage in dvc.yaml


# The merged set's figures people compare (metrics/merge.json); the rest (rows removed per
# reason and round, execution runs, the equal_size shortfall) go to the details file.
HEADLINE_KEYS = ("rows", "tokens_est")


def verify_plots_path(plots: str) -> Path:
    """The verification columns per round beside the per-round plot data:
    metrics/rounds_verify.json ([] without evolve.verify: tests, so no empty chart)."""
    path = Path(plots)
    return path.with_name(f"{path.stem}_verify{path.suffix}")


def run(params: str, seed_path: str, evolved_dir: str, out: str, report: str, metrics: str,
        plots: str, details: str | None = None) -> dict:
    config = load_section(params, "merge", MergeConfig)
    rounds = load_rounds(params)
    tasks, files = [], {}
    for name, (path, param) in config.benchmark_files().items():
        if not Path(path).resolve().is_relative_to(Path(BENCHMARK_DIR).resolve()):
            log.warning("merge: %s = %s is outside %s/, which dvc.yaml lists as the stage's "
                        "dep: DVC will not rerun merge when that file changes", param, path,
                        BENCHMARK_DIR)
        loaded = benchmark_tasks.load_tasks(name, path, param)
        tasks += loaded
        files[name] = benchmark_tasks.describe(loaded, path)
    seed_rows = read_jsonl(seed_path)
    round_rows = {}
    for key in rounds:
        path = Path(evolved_dir) / f"{key}.jsonl"
        if not path.exists():
            raise DataError(path, None, None, f"output of round {key} is missing; run "
                            f"`dvc repro evolve@{key}` first")
        round_rows[key] = read_jsonl(path)
    pool = None
    if config.baseline == "equal_size":
        seed_config = load_section(params, "seed", SeedConfig)
        pool, _ = load_seeds(dataclasses.replace(seed_config, limit=0))
    holdout = dev_holdout() if config.holdout_dev else Holdout()
    runner = ExecRunner.from_config(config.sandbox) if config.decontam_execution else None
    rows, stats, per_round, decontam_report = merge(seed_rows, round_rows, config, pool=pool,
                                                    holdout=holdout, tasks=tasks, runner=runner)
    decontam_report["benchmark_files"] = files
    with stage_run("merge", {"merge": to_dict(config), "rounds": rounds}) as run_:
        write_jsonl(out, rows)
        write_json(report, decontam_report)
        write_metrics(metrics, stats, {k: stats[k] for k in HEADLINE_KEYS}, details)
        plain, verified = split_verification(per_round)
        write_json(plots, plain)
        write_json(verify_plots_path(plots), verified)
        run_.log_metrics(stats)
        for record in per_round:
            run_.log_metrics({k: v for k, v in record.items() if k != "round"},
                             step=record["round"])
    log.info("merge: %d rows, ~%d tokens (%d removed) from seed + %d rounds, baseline %s",
             stats["rows"], stats["tokens_est"], stats["removed"], len(rounds), config.baseline)
    if stats.get("shortfall_rows"):
        log.warning("merge: equal_size baseline is %d rows short of the evolved set's %d: the "
                    "seed pool has only %d unevolved rows left", stats["shortfall_rows"],
                    stats["target_rows"], stats["pool_rows"])
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", default="data/seed.jsonl")
    p.add_argument("--evolved-dir", default="data/evolved")
    p.add_argument("--out", default="data/merged/train.jsonl")
    p.add_argument("--report", default="data/merged/decontamination.json")
    p.add_argument("--metrics", default="metrics/merge.json")
    p.add_argument("--details", default=None,
                   help="every figure beyond the headline (rows and tokens); default: all of "
                        "them in --metrics")
    p.add_argument("--plots", default="metrics/rounds.json")


def command(args: argparse.Namespace) -> None:
    run(args.params, args.seed, args.evolved_dir, args.out, args.report, args.metrics, args.plots,
        args.details)


def main(argv: list[str] | None = None) -> int:
    return stage_main("merge", __doc__, add_arguments, command, argv)
