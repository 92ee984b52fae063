"""Stage `generate`: benchmark completions from the fine-tuned model (section `generate`).

    python -m stages.generate --model models/sft --out data/eval/samples.jsonl

Prompts each benchmark task, samples ``n_samples`` completions through the chosen backend
(:mod:`wizardcoder.generate.base`), extracts the code and writes a self-describing samples
file; a killed run resumes from :mod:`wizardcoder.generate.runner`'s progress file.
"""

from __future__ import annotations

import argparse
import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def run(params: str, model_dir: str, out: str) -> dict:
    from wizardcoder.generate.config import GenerateConfig
    from wizardcoder.generate.runner import generate_samples

    config = load_section(params, "generate", GenerateConfig)
    with stage_run("generate", {"generate": to_dict(config)},
                   tags={"model_dir": model_dir}) as run_:
        stats = generate_samples(config, model_dir, out)
        run_.log_metrics(stats)
    log.info("generate: %s", stats)
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/sft", help="model directory, or 'embedded'")
    p.add_argument("--out", default="data/eval/samples.jsonl")


def command(args: argparse.Namespace) -> None:
    run(args.params, args.model, args.out)


def main(argv: list[str] | None = None) -> int:
    return stage_main("generate", __doc__, add_arguments, command, argv)
