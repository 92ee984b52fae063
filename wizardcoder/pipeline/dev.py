"""generate_dev / score_dev stages: the held-out dev score that chooses the round count.

The same model, prompt template, decoding settings (section `generate`), sanitizer and
sandbox (section `score`) as the reported benchmark; only the tasks differ (section
`select`: ``dev_benchmark``, ``dev_limit``). The sample file has the generate stage's format.
"""

from __future__ import annotations

import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.devset import SelectConfig, dev_problems
from wizardcoder.errors import DataError, ExternalError
from wizardcoder.jsonl import write_jsonl
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def generate(params: str, model_dir: str, out: str) -> dict:
    from wizardcoder.generation.base import make_backend
    from wizardcoder.generation.config import GenerateConfig
    from wizardcoder.generation.runner import make_header, prompt_text
    from wizardcoder.generation.sanitize import sanitize

    config = load_section(params, "generate", GenerateConfig)
    select = load_section(params, "select", SelectConfig)
    problems = dev_problems(select.dev_benchmark, select.dev_limit)
    task_ids = list(problems)
    header = {**make_header(config, model_dir, task_ids), "benchmark": select.dev_benchmark}
    rows = []
    with stage_run("generate_dev", {"generate": to_dict(config), "select": to_dict(select)},
                   tags={"model_dir": model_dir, "benchmark": select.dev_benchmark}) as run_:
        backend = make_backend(config, model_dir)
        try:
            for pos in range(0, len(task_ids), config.batch_size):
                chunk = task_ids[pos: pos + config.batch_size]
                texts = [prompt_text(problems[t], config.prompt_format) for t in chunk]
                outputs = backend.generate(texts, config.n_samples, seed=config.seed + pos)
                if len(outputs) != len(chunk):
                    raise ExternalError(f"backend {backend.name} returned {len(outputs)} "
                                        f"results for {len(chunk)} prompts")
                for task_id, text, raws in zip(chunk, texts, outputs, strict=True):
                    problem = problems[task_id]
                    rows.append({"type": "sample", "task_id": task_id, "prompt_text": text,
                                 "raw": raws, "solution": [
                                     sanitize(r, problem["entry_point"], problem["prompt"])
                                     for r in raws]})
        finally:
            backend.close()
        write_jsonl(out, [header, *rows])
        stats = {"tasks": len(task_ids), "samples_per_task": config.n_samples}
        run_.log_metrics(stats)
    log.info("generate_dev: %d %s tasks -> %s", len(task_ids), select.dev_benchmark, out)
    return stats


def score(params: str, samples: str, metrics: str, results: str,
          rounds_plot: str | None = None) -> dict:
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
                           rows, metrics, results, rounds_plot=rounds_plot, params=params)
