"""The figures of one evolution round: verdicts per rule, method and error class (and each row
dropped for a failed request, ``failed_rows``); tokens and
cost split into requests sent now and answers from the cache; and what the judge-first
order saved (the answers never bought for rows the judge dropped).

Written by the evolve stage to MLflow and, split three ways, to files: the round's headline
(:func:`headline`: ``metrics/evolve/rN.json``, a DVC metric compared across experiments), every
reproducible figure (``metrics/details/evolve/rN.json``, a DVC output that is not a metric) and
what varies between runs of the same inputs (``metrics/run_facts/evolve/rN.json``).
"""

from __future__ import annotations

from collections import Counter

from wizardcoder.evolve import filters
from wizardcoder.evolve.prompts import METHODS, answer_messages
from wizardcoder.llm.cache import ERROR_CLASSES
from wizardcoder.llm.config import STEP_NAMES
from wizardcoder.llm.limits import Prices


def failure_counts(work) -> dict:
    """Rows eliminated with verdict request_error: in total, per error class and per step."""
    failed = [r for r in work if r.error is not None]
    return {"total": len(failed),
            "by_class": {c: sum(r.error["class"] == c for r in failed) for c in ERROR_CLASSES},
            "by_step": {s: sum(r.error["step"] == s for r in failed) for s in STEP_NAMES}}


def failed_rows(work) -> list[dict]:
    """Every row dropped for a failed request: its id, the step and the error class (the
    message is in data/rejected/rN.jsonl)."""
    return [{"id": r.parent["id"], "step": r.error["step"], "class": r.error["class"]}
            for r in work if r.error is not None]


def _tokens() -> dict:
    return {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}


def _tokens_est(messages: list[dict]) -> int:
    """The client's prompt estimate (chars/4 + 1)."""
    return sum(len(str(m["content"])) for m in messages) // 4 + 1


def judge_first_savings(work, prices: Prices, answer_max_tokens: int) -> dict:
    """Answers not bought because the judge ran first and dropped the row, and the judge
    calls the order added (rows judged whose answer then failed; the old order, answer then
    judge, would not have judged them). Completion tokens of an unsent answer are estimated
    by the mean of this round's answers (``answer_max_tokens`` when there is none)."""
    # The first answer call of each row (verification may sample more).
    answered = [next(c for step, _, c, _ in r.calls if step == "answer") for r in work
                if "answer" in r.usage and r.error is None]
    mean_completion = sum(answered) / len(answered) if answered else answer_max_tokens
    saved = [r for r in work if r.failed_rule == "judge_equal"]
    prompt = sum(_tokens_est(answer_messages(r.evolved)) for r in saved)
    completion = round(mean_completion * len(saved))
    extra = [r for r in work if "judge" in r.usage and "answer" in r.usage and r.failed_rule]
    extra_cost = sum(prices.cost(r.usage["judge"]["prompt_tokens"],
                                 r.usage["judge"]["completion_tokens"]) for r in extra)
    return {
        "answer_calls_not_sent": len(saved),
        "prompt_tokens_est": prompt,
        "completion_tokens_est": completion,
        "cost_usd_est": round(prices.cost(prompt, completion), 6),
        "cost_usd_max": round(prices.cost(prompt, answer_max_tokens * len(saved)), 6),
        "judge_calls_extra": len(extra),
        "judge_cost_usd_extra": round(extra_cost, 6),
    }


def round_stats(work, round_key: str, prices: Prices | None = None, config=None) -> dict:
    """Counts per rule, method and error class, and tokens/cost split into network vs cache.

    ``cost_usd`` is what this run paid (network answers); cache hits cost nothing now, and
    ``cache.value_usd`` says what they cost when they were first paid for. ``config``: the
    round's EvolveConfig (budget and answer_max_tokens for the figures; None = defaults).
    """
    prices = prices or Prices()
    kept = [r for r in work if not r.failed_rule]
    dropped_rule = Counter(r.failed_rule for r in work if r.failed_rule)
    by_method = {m: {"kept": 0, "dropped": 0,
                     "dropped_by_rule": {rule: 0 for rule in filters.VERDICTS},
                     "request_errors": {c: 0 for c in ERROR_CLASSES}} for m in METHODS}
    for r in work:
        by_method[r.method]["dropped" if r.failed_rule else "kept"] += 1
        if r.failed_rule:
            by_method[r.method]["dropped_by_rule"][r.failed_rule] += 1
        if r.error is not None:
            by_method[r.method]["request_errors"][r.error["class"]] += 1
    network, cache = _tokens(), {**_tokens(), "value_usd": 0.0}
    # "tests": the test-writing calls of evolve.verify_tests: separate.
    by_step = {step: {**_tokens(), "cache_hits": 0} for step in (*STEP_NAMES, "tests")}
    for r in work:
        for step, p, c, cached in r.calls:
            cost = prices.cost(p, c)
            bucket = cache if cached else network
            for target in (bucket, by_step[step]):
                target["requests"] += 1
                target["prompt_tokens"] += p
                target["completion_tokens"] += c
            if cached:
                cache["value_usd"] += cost
                by_step[step]["cache_hits"] += 1
            else:
                network["cost_usd"] += cost
                by_step[step]["cost_usd"] += cost
    for d in (network, cache, *by_step.values()):
        for k in ("cost_usd", "value_usd"):
            if k in d:
                d[k] = round(d[k], 6)

    def mean_words(texts):
        texts = list(texts)
        return round(sum(len(t.split()) for t in texts) / len(texts), 2) if texts else 0.0

    failures = failure_counts(work)
    answer_max_tokens = config.answer_max_tokens if config is not None else 512
    return {
        "round": round_key,
        "rows_in": len(work),
        "kept": len(kept),
        "dropped": len(work) - len(kept),
        "keep_rate": round(len(kept) / len(work), 4) if work else 0.0,
        "dropped_by_rule": {rule: dropped_rule.get(rule, 0) for rule in filters.VERDICTS},
        "request_errors": failures["by_class"],
        "request_errors_by_step": failures["by_step"],
        "failed_fraction": round(failures["total"] / len(work), 6) if work else 0.0,
        "failed_rows": failed_rows(work),
        "max_failed_fraction": config.max_failed_fraction if config is not None else None,
        "by_method": by_method,
        "calls": network["requests"] + cache["requests"],
        "cache_hits": cache["requests"],
        "network_calls": network["requests"],
        "prompt_tokens": network["prompt_tokens"] + cache["prompt_tokens"],
        "completion_tokens": network["completion_tokens"] + cache["completion_tokens"],
        "cost_usd": network["cost_usd"],
        "budget_usd": config.budget_usd if config is not None else 0.0,
        "network": network,
        "cache": cache,
        "by_step": by_step,
        "judge_first": judge_first_savings(work, prices, answer_max_tokens),
        "instruction_words": mean_words(r.evolved for r in kept),
        "response_words": mean_words(r.answer for r in kept),
    }


# What varies between two runs of the same round (the cache's state, prices, budget, sandbox
# speed): the run facts (metrics/run_facts/evolve/rN.json and MLflow), not the metrics file.
RUN_FACT_KEYS = ("cache_hits", "network_calls", "cost_usd", "budget_usd",
                 "max_failed_fraction", "network", "cache", "judge_first", "client")
RUN_FACT_STEP_KEYS = ("cache_hits", "cost_usd")  # of each by_step entry
RUN_FACT_VERIFY_KEYS = ("sandbox_s", "sandbox_rows_per_s")


def headline(stats: dict, round_key: str) -> dict:
    """The figures of a round people compare across experiments (``metrics/evolve/rN.json``,
    keys named after the round so ``dvc exp show`` prints them without a file prefix): rows
    kept, the calls the round needed and their tokens, and what those calls cost at the
    ``llm`` prices (paid by this run or, for answers from the request cache, by an earlier
    one; what this run paid is a run fact)."""
    spent = (stats.get("network") or {}).get("cost_usd", 0.0) \
        + (stats.get("cache") or {}).get("value_usd", 0.0)
    return {f"{round_key}_kept": stats["kept"], f"{round_key}_calls": stats["calls"],
            f"{round_key}_tokens": stats["prompt_tokens"] + stats["completion_tokens"],
            f"{round_key}_cost_usd": round(spent, 6)}


def split_run_facts(stats: dict) -> tuple[dict, dict]:
    """(metrics, run facts) of :func:`round_stats`' figures (plus what the stage adds): the
    metrics hold what the same inputs reproduce (rows kept and dropped, per rule and method,
    all calls and their tokens, cache hits or not); the run facts what a warm cache, the
    prices, the budget or the machine's speed change."""
    metrics = {k: v for k, v in stats.items() if k not in RUN_FACT_KEYS}
    facts = {k: stats[k] for k in RUN_FACT_KEYS if k in stats}
    if isinstance(stats.get("by_step"), dict):
        metrics["by_step"] = {s: {k: v for k, v in d.items() if k not in RUN_FACT_STEP_KEYS}
                              for s, d in stats["by_step"].items()}
        facts["by_step"] = {s: {k: d[k] for k in RUN_FACT_STEP_KEYS if k in d}
                            for s, d in stats["by_step"].items()}
    if isinstance(stats.get("verify"), dict):
        metrics["verify"] = {k: v for k, v in stats["verify"].items()
                             if k not in RUN_FACT_VERIFY_KEYS}
        facts["verify"] = {k: stats["verify"][k] for k in RUN_FACT_VERIFY_KEYS
                           if k in stats["verify"]}
    if isinstance(stats.get("verify_rows"), list):
        metrics["verify_rows"] = [{k: v for k, v in r.items() if k != "run_s"}
                                  for r in stats["verify_rows"]]
        facts["verify_run_s"] = {r["parent_id"]: r.get("run_s") for r in stats["verify_rows"]}
    return metrics, facts
