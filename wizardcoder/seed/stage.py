"""Stage `seed`: load, validate and id the seed instructions (section `seed`).

    python -m stages.seed --out data/seed.jsonl --metrics metrics/seed.json

Rows come from the bundled sample, a local JSON/JSONL file or a Hugging Face dataset
(:mod:`wizardcoder.seed.seeds`); each gets a content id and a lineage record that every
evolved descendant carries.
"""

from __future__ import annotations

import argparse
import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.jsonl import write_json, write_jsonl
from wizardcoder.seed.config import SeedConfig
from wizardcoder.seed.seeds import load_seeds
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def run(params: str, out: str, metrics: str) -> dict:
    config = load_section(params, "seed", SeedConfig)
    rows, stats = load_seeds(config)
    with stage_run("seed", {"seed": to_dict(config)}) as run_:
        write_jsonl(out, rows)
        write_json(metrics, stats)
        run_.log_metrics(stats)
    log.info("seed: wrote %d rows to %s (%s)", len(rows), out, stats)
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/seed.jsonl")
    p.add_argument("--metrics", default="metrics/seed.json")


def command(args: argparse.Namespace) -> None:
    run(args.params, args.out, args.metrics)


def main(argv: list[str] | None = None) -> int:
    return stage_main("seed", __doc__, add_arguments, command, argv)
