"""evolve@rN stage: one round of Code Evol-Instruct through the configured LLM."""

from __future__ import annotations

import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.errors import DataError
from wizardcoder.evolve.engine import EvolveConfig, evolve_round, round_number
from wizardcoder.evolve.rounds import load_rounds
from wizardcoder.jsonl import iter_jsonl, write_json, write_jsonl
from wizardcoder.llm.config import LLMConfig
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def read_round_input(path: str) -> list[dict]:
    rows = []
    for line, row in iter_jsonl(path):
        for name in ("id", "instruction"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DataError(path, line, name, "missing or not a non-empty string")
        if not isinstance(row.get("lineage"), dict):
            raise DataError(path, line, "lineage", "missing; rows must come from the seed or "
                            "evolve stage")
        rows.append(row)
    if not rows:
        raise DataError(path, None, None, "no rows to evolve")
    return rows


def run(params: str, round_key: str, input_path: str, out: str, rejected: str,
        metrics: str) -> dict:
    round_number(round_key)
    rounds = load_rounds(params)
    if round_key in rounds and rounds[round_key] != input_path:
        log.warning("evolve %s: input %s differs from params rounds.%s=%s", round_key,
                    input_path, round_key, rounds[round_key])
    llm_config = load_section(params, "llm", LLMConfig)
    config = load_section(params, "evolve", EvolveConfig)
    rows = read_round_input(input_path)

    from wizardcoder.llm.server import open_client

    with stage_run(f"evolve@{round_key}", {"llm": to_dict(llm_config),
                                           "evolve": to_dict(config)},
                   tags={"round": round_key}) as run_, open_client(llm_config) as client:
        output, rejected_rows, stats = evolve_round(rows, config, client, round_key,
                                                    model=client.model_identity)
        stats["client"] = dict(client.stats)
        write_jsonl(out, output)
        write_jsonl(rejected, rejected_rows)
        write_json(metrics, stats)
        run_.log_metrics({k: v for k, v in stats.items() if k != "round"})
    log.info("evolve %s: %d rows in, %d evolved kept, %d dropped %s", round_key,
             stats["rows_in"], stats["kept"], stats["dropped"], stats["dropped_by_rule"])
    return stats
