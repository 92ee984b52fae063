"""The `wizardcoder` command: one subcommand per pipeline stage, plus helpers.

    wizardcoder seed      --params params.yaml --out data/seed.jsonl
    wizardcoder evolve    --round r1 --input data/seed.jsonl --out data/evolved/r1.jsonl
    wizardcoder merge     --out data/merged/train.jsonl
    wizardcoder train     --data data/merged/train.jsonl --out models/sft
    wizardcoder generate  --model models/sft --out data/eval/samples.jsonl
    wizardcoder score     --samples data/eval/samples.jsonl
    wizardcoder log       # the whole experiment on its MLflow parent run
    wizardcoder report    # HTML + Markdown report comparing experiments
    wizardcoder params    [section]      # every params.yaml key with its help text
    wizardcoder exp       rounds|grid|compare|select-rounds   # DVC experiment helpers

A stage subcommand is the same code DVC runs through ``stages/<stage>.py``: both parse the
arguments that ``wizardcoder/<stage>/stage.py`` declares and call its ``run``. Errors in
input or configuration print one line naming the file, line and field, and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from wizardcoder.entry import common_parser, run_command

# subcommand -> (stage module, help); each module has add_arguments(parser) and main/command.
STAGES = {
    "seed": ("wizardcoder.seed.stage", "load and validate seed instructions"),
    "evolve": ("wizardcoder.evolve.stage", "run one Code Evol-Instruct round"),
    "merge": ("wizardcoder.merge.stage", "merge, dedupe and decontaminate seed + rounds"),
    "train": ("wizardcoder.train.stage", "supervised fine-tuning"),
    "generate": ("wizardcoder.generate.stage", "benchmark completions"),
    "score": ("wizardcoder.score.stage", "sandboxed execution and pass@k"),
    "log": ("wizardcoder.log.stage",
            "log the whole experiment on its MLflow parent run (the last stage)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wizardcoder", description=__doc__.split("\n\n")[0])
    common = common_parser()
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    for name, (module_name, help_text) in STAGES.items():
        module = importlib.import_module(module_name)
        p = add(name, parents=[common], help=help_text,
                description=module.__doc__.split("\n\n")[0],
                epilog=getattr(module, "CLI_EPILOG", None))
        module.add_arguments(p)
        p.set_defaults(func=module.command)

    p = add("report", parents=[common], help="HTML + Markdown report comparing experiments")
    p.add_argument("--out-dir", default="reports",
                   help="writes report.html (self-contained), report.md and figures/ "
                        "(default: %(default)s)")
    p.add_argument("--exp", action="append", metavar="NAME",
                   help="experiment name or revision to include (repeatable; 'workspace' "
                        "for the working tree); default: the baseline, its experiments and "
                        "the workspace")
    p.add_argument("--workspace-only", action="store_true",
                   help="only the working tree's outputs (no `dvc exp show`)")
    p.add_argument("--no-mlflow", action="store_true", help="do not look up MLflow runs")
    p.add_argument("--bootstrap", type=int, default=2000,
                   help="bootstrap resamples for the pass@k intervals (default: %(default)s)")
    p.set_defaults(func=_report)

    p = add("params", parents=[common], help="describe every params.yaml section and key")
    p.add_argument("section", nargs="?", help="one section only")
    p.set_defaults(func=_params)

    p = add("exp", help="DVC experiment helpers: round counts, grids, comparison, round "
                        "selection (each prints the DVC commands it runs)")
    exp = p.add_subparsers(dest="exp_command", required=True).add_parser
    e = exp("rounds", parents=[common], help="run (or queue) an experiment with N rounds")
    e.add_argument("count", type=int, help="number of evolution rounds")
    e.add_argument("--queue", action="store_true", help="queue it (dvc exp run --queue)")
    e.add_argument("--name", help="experiment name (dvc exp run --name)")
    e.add_argument("--force", action="store_true", help="overwrite an experiment of that name")
    e.set_defaults(func=_experiments("cmd_rounds"))
    e = exp("grid", parents=[common], help="queue one experiment per setting")
    e.add_argument("--rounds", type=int, nargs="+", required=True, help="round counts, e.g. 1 2 3")
    e.add_argument("--baselines", nargs="*", choices=("seed_only", "equal_size"),
                   help="add unevolved baselines (no value: both)")
    e.add_argument("--ablate-methods", action="store_true",
                   help="add one experiment per evolution method with its weight set to 0")
    e.add_argument("--verify", action="store_true",
                   help="add a verified experiment (evolve.verify=tests) beside each round count")
    e.add_argument("--prefix", default="", help="prefix of the experiment names")
    e.add_argument("--force", action="store_true", help="overwrite experiments of those names")
    e.add_argument("--run", action="store_true",
                   help="start the queue (dvc queue start -j N) and wait for the grid")
    e.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (default 1)")
    e.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    e.add_argument("--timeout", type=float, default=None, help="give up waiting after S seconds")
    e.set_defaults(func=_experiments("cmd_grid"))
    e = exp("compare", parents=[common],
            help="dvc exp show (useful columns) and dvc metrics diff")
    e.add_argument("revs", nargs="*", help="none: HEAD vs workspace; one: HEAD vs it; two")
    e.add_argument("--md", action="store_true", help="Markdown table")
    e.set_defaults(func=_experiments("cmd_compare"))
    e = exp("select-rounds", parents=[common],
            help="choose the round count on the held-out dev set (section select)")
    e.add_argument("--out", default="metrics/round_selection.json")
    e.set_defaults(func=_experiments("cmd_select_rounds"))
    from wizardcoder.experiments import dev

    for name, (add_arguments, command, help_text) in dev.STAGES.items():
        e = exp(name, parents=[common], help=help_text)
        add_arguments(e)
        e.set_defaults(func=command)
    return parser


def _experiments(name: str):
    def command(args: argparse.Namespace) -> None:
        from wizardcoder.experiments import commands

        getattr(commands, name)(args)
    return command


def _report(args: argparse.Namespace) -> None:
    from wizardcoder.experiments.report import build_report

    paths = build_report(".", args.out_dir, args.exp, args.workspace_only,
                         not args.no_mlflow, args.bootstrap)
    for path in paths.values():
        print(path)


def _params(args: argparse.Namespace) -> None:
    from wizardcoder.params import describe_params

    print(describe_params(args.section))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
