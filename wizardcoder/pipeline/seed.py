"""seed stage: load, validate and id the seed instructions."""

from __future__ import annotations

import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.jsonl import write_json, write_jsonl
from wizardcoder.seeds import SeedConfig, load_seeds
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
