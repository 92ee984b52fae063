"""Stage `train`: supervised fine-tuning on the merged data (WizardCoder recipe).

    python -m stages.train --data data/merged/train.jsonl --out models/sft \
        --metrics metrics/train.json --plots metrics/train_curve.json

With ``train.launcher: deepspeed`` the stage re-executes itself under DeepSpeed's launcher
(multi-GPU, multi-node with a hostfile); each worker then runs this same function.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.tracking import StageRun, stage_run

log = logging.getLogger(__name__)


def eval_plots_path(plots: str) -> Path:
    """The eval-loss curve beside the training curve: metrics/train_curve_eval.json."""
    path = Path(plots)
    return path.with_name(f"{path.stem}_eval{path.suffix}")


def run(params: str, data: str, model_out: str, metrics: str, plots: str) -> dict:
    from wizardcoder.train import TrainConfig, maybe_relaunch, run_training

    config = load_section(params, "train", TrainConfig)
    maybe_relaunch(config, argv=["train", "--params", params, "--data", data, "--out", model_out,
                                 "--metrics", metrics, "--plots", plots], module="wizardcoder")
    if int(os.environ.get("RANK", "0")) != 0:  # only rank 0 talks to MLflow
        return run_training(config, data, model_out, metrics, plots, run=StageRun(None),
                            eval_plots_path=eval_plots_path(plots))
    with stage_run("train", {"train": to_dict(config)}) as run_:
        result = run_training(config, data, model_out, metrics, plots, run=run_,
                              eval_plots_path=eval_plots_path(plots))
        run_.log_metrics({f"final_{k}": v for k, v in result.items()})
    log.info("train: %s", result)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/merged/train.jsonl")
    p.add_argument("--out", default="models/sft")
    p.add_argument("--metrics", default="metrics/train.json")
    p.add_argument("--plots", default="metrics/train_curve.json")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # passed by the deepspeed launcher


def command(args: argparse.Namespace) -> None:
    run(args.params, args.data, args.out, args.metrics, args.plots)


def main(argv: list[str] | None = None) -> int:
    return stage_main("train", __doc__, add_arguments, command, argv)
