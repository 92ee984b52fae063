"""generate_dev / score_dev stages: the held-out dev score that chooses the round count.

The same model, prompt template, decoding settings (section `generate`), sanitizer and
sandbox (section `score`) as the reported benchmark; only the tasks differ (section
`select`: ``dev_benchmark``, ``dev_limit``). The sample file has the generate stage's format.
"""

from __future__ import annotations

import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.devset import SelectConfig, dev_problems
from wizardcoder.errors import DataError
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def generate(params: str, model_dir: str, out: str) -> dict:
    from wizardcoder.generation.config import GenerateConfig
    from wizardcoder.generation.runner import generate_samples

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


def score(params: str, samples: str, metrics: str, results: str) -> dict:
    from wizardcoder.pipeline.score import ScoreConfig, read_samples, score_and_write

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
                           rows, metrics, results)
