"""Stages generate_dev and score_dev: the held-out dev score that chooses the round count.

    python -m stages.generate_dev --model models/sft --out data/dev/samples.jsonl
    python -m stages.score_dev --samples data/dev/samples.jsonl \
        --metrics metrics/dev_score.json --details metrics/details/dev_score.json \
        --results data/dev/results.jsonl --run-facts metrics/run_facts/score_dev.json

The same model, prompt template, decoding settings (section `generate`), sanitizer and
sandbox (section `score`) as the reported benchmark; only the tasks differ (section
`select`: ``dev_benchmark``, ``dev_limit``). The sample file has the generate stage's format.
"""

from __future__ import annotations

import argparse
import logging

from wizardcoder.benchmarks.devset import dev_problems
from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.errors import DataError
from wizardcoder.experiments.config import SelectConfig
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def generate(params: str, model_dir: str, out: str) -> dict:
    from wizardcoder.generate.config import GenerateConfig
    from wizardcoder.generate.runner import generate_samples

    config = load_section(params, "generate", GenerateConfig)
    select = load_section(params, "select", SelectConfig)
    problems = dev_problems(select.dev_benchmark, select.dev_limit)
    with stage_run("generate_dev", {"generate": to_dict(config), "select": to_dict(select)},
                   tags={"model_dir": model_dir, "benchmark": select.dev_benchmark}) as run_:
        stats = generate_samples(config, model_dir, out, problems=problems,
                                 benchmark=select.dev_benchmark)
        run_.log_metrics({"tasks": stats["tasks"], "samples_per_task": config.n_samples})
    log.info("generate_dev: %d %s tasks -> %s", stats["tasks"], select.dev_benchmark, out)
    return stats


def score(params: str, samples: str, metrics: str, results: str,
          facts: str | None = None, details: str | None = None) -> dict:
    from wizardcoder.score.config import ScoreConfig
    from wizardcoder.score.stage import read_samples, score_and_write

    config = load_section(params, "score", ScoreConfig)
    header, rows = read_samples(samples)
    name = header.get("benchmark")
    if not rows or not name:
        raise DataError(samples, None, None, "no samples, or no header naming the dev set")
    task_ids = sorted({r["task_id"] for r in rows})
    problems = dev_problems(name)
    unknown = [t for t in task_ids if t not in problems]
    if unknown:
        raise DataError(samples, None, "task_id", f"{unknown[0]!r} is not a task of {name}")
    # seed_dev runs each task's check(); MBPP+ compares against reference outputs.
    return score_and_write("score_dev", config, name, {t: problems[t] for t in task_ids},
                           rows, metrics, results, facts=facts, details=details,
                           headline_prefix="dev_")


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/sft")
    p.add_argument("--out", default="data/dev/samples.jsonl")


def _score_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", default="data/dev/samples.jsonl")
    p.add_argument("--metrics", default="metrics/dev_score.json")
    p.add_argument("--results", default="data/dev/results.jsonl")
    p.add_argument("--details", default=None, metavar="JSON",
                   help="every count here, only the headline (dev_pass@k and its bounds) in "
                        "--metrics; default: all of it in --metrics")
    p.add_argument("--run-facts", default=None, metavar="JSON",
                   help="also write the run times here (not compared: see score --help)")


def generate_dev_command(args: argparse.Namespace) -> None:
    generate(args.params, args.model, args.out)


def score_dev_command(args: argparse.Namespace) -> None:
    score(args.params, args.samples, args.metrics, args.results, args.run_facts, args.details)


def generate_dev_main(argv: list[str] | None = None) -> int:
    return stage_main("generate_dev", __doc__, _generate_arguments, generate_dev_command, argv)


def score_dev_main(argv: list[str] | None = None) -> int:
    return stage_main("score_dev", __doc__, _score_arguments, score_dev_command, argv)


# `wizardcoder exp <name>`: the same stages as stages/generate_dev.py and stages/score_dev.py
STAGES = {
    "dev-generate": (_generate_arguments, generate_dev_command,
                     "stage generate_dev: dev-set completions"),
    "dev-score": (_score_arguments, score_dev_command, "stage score_dev: dev-set pass@k"),
}
