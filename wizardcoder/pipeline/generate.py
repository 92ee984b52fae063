"""generate stage: benchmark completions from the fine-tuned model."""

from __future__ import annotations

import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def run(params: str, model_dir: str, out: str) -> dict:
    from wizardcoder.generation.config import GenerateConfig
    from wizardcoder.generation.runner import generate_samples

    config = load_section(params, "generate", GenerateConfig)
    with stage_run("generate", {"generate": to_dict(config)},
                   tags={"model_dir": model_dir}) as run_:
        stats = generate_samples(config, model_dir, out)
        run_.log_metrics(stats)
    log.info("generate: %s", stats)
    return stats
