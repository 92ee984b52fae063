"""train stage: supervised fine-tuning on the merged data (WizardCoder recipe)."""

from __future__ import annotations

import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def run(params: str, data: str, model_out: str, metrics: str, plots: str) -> dict:
    from wizardcoder.training.config import TrainConfig
    from wizardcoder.training.trainer import run_training

    config = load_section(params, "train", TrainConfig)
    with stage_run("train", {"train": to_dict(config)}) as run_:
        result = run_training(config, data, model_out, metrics, plots, run=run_)
        run_.log_metrics({f"final_{k}": v for k, v in result.items()})
    log.info("train: %s", result)
    return result
