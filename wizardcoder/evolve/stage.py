"""Stage evolve@rN: one round of Code Evol-Instruct through the configured LLM.

    python -m stages.evolve --round r1 --input data/seed.jsonl --out data/evolved/r1.jsonl \
        --rejected data/rejected/r1.jsonl --metrics metrics/evolve/r1.json \
        --details metrics/details/evolve/r1.json --run-facts metrics/run_facts/evolve/r1.json

Read the round's rows, evolve -> judge -> answer each through the LLM (the request cache
makes a rerun resume), verify answers in the sandbox if ``evolve.verify: tests``, and write
the kept rows, the rejected rows and the round's figures, atomically and only when the whole
round succeeded: the headline (rows kept, calls, tokens, cost: a DVC metric) to ``--metrics``,
every other reproducible figure to ``--details`` (:mod:`wizardcoder.headline`); what this run
paid, cache hits, budget and sandbox times to the run facts
(:func:`~wizardcoder.evolve.stats.split_run_facts`). ``--dry-run``
(:mod:`wizardcoder.evolve.dry_run`) prints what the round would send and cost instead.
"""

from __future__ import annotations

import argparse
import logging

from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.evolve.config import load_configs
from wizardcoder.evolve.engine import evolve_round
from wizardcoder.evolve.stats import headline, split_run_facts
from wizardcoder.headline import write_metrics
from wizardcoder.jsonl import write_json, write_jsonl
from wizardcoder.llm.config import LLMConfig
from wizardcoder.llm.limits import usd
from wizardcoder.rounds import read_round_input, round_input, round_number
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def run_facts_path(round_key: str) -> str:
    """Where a round's run facts go by default (cache hits, cost, budget, sandbox times:
    what varies between two runs of the same inputs, kept out of the metrics file)."""
    return f"metrics/run_facts/evolve/{round_key}.json"


def run(params: str, round_key: str, input_path: str, out: str, rejected: str,
        metrics: str, run_facts: str | None = None, details: str | None = None) -> dict:
    """One round; ``run_facts``: where the figures that vary between runs of the same inputs
    go besides MLflow (None: MLflow only); ``details``: where the figures beyond the headline
    go (None: all of them to ``metrics``)."""
    llm_config, config = load_configs(params, round_key, input_path)
    rows = read_round_input(input_path)
    sandbox, logged = None, {"llm": to_dict(llm_config), "evolve": to_dict(config)}
    if config.verify == "tests":
        sandbox = verify_sandbox(config.sandbox)

    from wizardcoder.llm.server import open_client

    # The client first: a server that is not there fails in milliseconds, before MLflow
    # (seconds to start) opens a run for a round that cannot happen.
    with open_client(llm_config) as client, stage_run(f"evolve@{round_key}", logged,
                                                      tags={"round": round_key}) as run_:
        output, rejected_rows, stats = evolve_round(rows, config, client, round_key,
                                                    model=client.model_identity,
                                                    sandbox=sandbox)
        stats["client"] = dict(client.stats)
        write_jsonl(out, output)
        write_jsonl(rejected, rejected_rows)
        figures, facts = split_run_facts(stats)
        write_metrics(metrics, figures, headline(stats, round_key), details)
        if run_facts:
            write_json(run_facts, facts)
        run_.log_metrics({k: v for k, v in stats.items() if k not in ("round", "verify_rows")})
    saved = stats["judge_first"]
    log.info("evolve %s: %d rows in, %d evolved kept, %d dropped %s (request errors %s); %d "
             "requests sent (%d prompt + %d completion tokens, %s), %d from the cache; the "
             "judge-first order did not send %d answer(s) (~%s)", round_key,
             stats["rows_in"], stats["kept"], stats["dropped"], stats["dropped_by_rule"],
             {k: v for k, v in stats["request_errors"].items() if v},
             stats["network_calls"], stats["network"]["prompt_tokens"],
             stats["network"]["completion_tokens"], usd(stats["cost_usd"]),
             stats["cache_hits"], saved["answer_calls_not_sent"], usd(saved["cost_usd_est"]))
    if "verify" in stats:
        v = stats["verify"]
        log.info("evolve %s: verify tests: %d of %d answered rows passed their tests "
                 "(%.1f%%), %.2f attempts per kept row, %d eliminated failed_tests, %d "
                 "no_python; %.1f tests per kept row (%d with a single test); %d sandbox runs "
                 "in %.1f s (%.1f rows/s)", round_key, v["kept"], v["rows_verified"],
                 100 * v["verified_rate"], v["attempts_per_kept"],
                 v["eliminated_failed_tests"], v["eliminated_no_python"],
                 v["tests_per_kept_mean"], v["kept_with_one_test"], v["sandbox_runs"],
                 v["sandbox_s"], v["sandbox_rows_per_s"])
    return stats


def cancel_batches(params: str) -> None:
    """``--cancel-batches``: cancel every batch recorded as running (llm.mode: batch)."""
    from wizardcoder.llm.server import open_client

    config = load_section(params, "llm", LLMConfig)
    if config.provider != "openai":
        log.info("llm.provider %s has no Batch API: nothing to cancel", config.provider)
        return
    with open_client(config) as client:
        cancelled = client.cancel_batches()
    for batch_id, status in cancelled:
        log.info("batch %s: %s", batch_id, status)
    log.info("%d batch(es) cancelled; rerun the stage to collect their answers and resubmit "
             "the rest", len(cancelled))


def verify_sandbox(config):
    """The sandbox evolve.verify: tests runs answers in, from ``evolve.sandbox`` (a
    :class:`~wizardcoder.evolve.config.VerifySandboxConfig`)."""
    from wizardcoder.evolve.verify import Sandbox

    sandbox = Sandbox.from_config(config)
    # Before the first LLM call: where strict isolation cannot hold, the round stops before
    # anything is paid for, and the metrics always record the layers the answers ran under.
    sandbox.check_isolation()
    return sandbox


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--round", required=True, help="round name: r1, r2, ...")
    p.add_argument("--input", help="rows to evolve (default: the round's input in params)")
    p.add_argument("--out", help="default: data/evolved/<round>.jsonl")
    p.add_argument("--rejected", help="default: data/rejected/<round>.jsonl")
    p.add_argument("--metrics", help="default: metrics/evolve/<round>.json")
    p.add_argument("--details", help="every figure beyond the headline (rows per rule, method "
                                     "and step...); default: all of them in --metrics")
    p.add_argument("--run-facts", help="default: metrics/run_facts/evolve/<round>.json, "
                                       "none (MLflow only) when --metrics is given")
    p.add_argument("--dry-run", action="store_true",
                   help="print the round's calls (cached / to send), token and cost range "
                        "and budget verdict; sends nothing, starts no server, writes nothing")
    p.add_argument("--cancel-batches", action="store_true",
                   help="llm.mode batch: cancel the batches a stopped run left running at the "
                        "provider (a rerun keeps what they answered and resubmits the rest)")


def command(args: argparse.Namespace) -> None:
    key = args.round
    input_path = args.input or round_input(round_number(key))
    if args.cancel_batches:
        cancel_batches(args.params)
        return
    if args.dry_run:
        from wizardcoder.evolve.dry_run import dry_run

        dry_run(args.params, key, input_path)
        return
    run(args.params, key, input_path, args.out or f"data/evolved/{key}.jsonl",
        args.rejected or f"data/rejected/{key}.jsonl",
        args.metrics or f"metrics/evolve/{key}.json",
        args.run_facts or (None if args.metrics else run_facts_path(key)), args.details)


def main(argv: list[str] | None = None) -> int:
    return stage_main("evolve", __doc__, add_arguments, command, argv)
