"""Stage `train`: supervised fine-tuning on the merged data (WizardCoder recipe).

    python -m stages.train --data data/merged/train.jsonl --out models/sft \
        --metrics metrics/train.json --details metrics/details/train.json \
        --plots metrics/train_curve.json --run-facts metrics/run_facts/train.json

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


def speed_plots_path(facts: str) -> Path:
    """Tokens/s per logged step beside the run facts: metrics/run_facts/train_speed.json."""
    path = Path(facts)
    return path.with_name(f"{path.stem}_speed{path.suffix}")


def run(params: str, data: str, model_out: str, metrics: str, plots: str,
        facts: str | None = None, details: str | None = None) -> dict:
    """``facts``: the run-facts file (run time, tokens/s, MFU, resume point: they vary from
    run to run, so they are kept out of ``metrics`` and the model); None: MLflow only."""
    from wizardcoder.train import TrainConfig, maybe_relaunch, run_training

    config = load_section(params, "train", TrainConfig)
    argv = ["train", "--params", params, "--data", data, "--out", model_out,
            "--metrics", metrics, "--plots", plots]
    argv += ["--details", details] if details else []
    maybe_relaunch(config, argv=argv + (["--run-facts", facts] if facts else []),
                   module="wizardcoder")
    paths = {"eval_plots_path": eval_plots_path(plots), "facts_path": facts,
             "speed_plots_path": speed_plots_path(facts) if facts else None,
             "details_path": details}
    if int(os.environ.get("RANK", "0")) != 0:  # only rank 0 talks to MLflow
        return run_training(config, data, model_out, metrics, plots, run=StageRun(None),
                            **paths)
    with stage_run("train", {"train": to_dict(config)}) as run_:
        result = run_training(config, data, model_out, metrics, plots, run=run_, **paths)
        run_.log_metrics({f"final_{k}": v for k, v in result.items()})
    log.info("train: %s", result)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data/merged/train.jsonl")
    p.add_argument("--out", default="models/sft")
    p.add_argument("--metrics", default="metrics/train.json")
    p.add_argument("--plots", default="metrics/train_curve.json")
    p.add_argument("--run-facts", default=None, metavar="JSON",
                   help="run time, tokens/s, MFU and resume point (and, beside it, tokens/s "
                        "per step as NAME_speed.json): kept out of --metrics so that file "
                        "depends on the inputs only")
    p.add_argument("--details", default=None, metavar="JSON",
                   help="rows, tokens, steps and parameters here, only the losses in "
                        "--metrics (what experiments are compared on); default: all in "
                        "--metrics")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # passed by the deepspeed launcher


def command(args: argparse.Namespace) -> None:
    run(args.params, args.data, args.out, args.metrics, args.plots, args.run_facts,
        args.details)


def main(argv: list[str] | None = None) -> int:
    return stage_main("train", __doc__, add_arguments, command, argv)
