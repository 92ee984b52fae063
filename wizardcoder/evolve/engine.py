"""One round of Code Evol-Instruct: evolve, answer, judge, eliminate.

Each row of the round's input is rewritten by the LLM with one method drawn (seeded, per
row) from the enabled methods, answered by the same LLM, and checked by the elimination
rules. A failed evolution is dropped and its parent is carried into the round's output,
so the next round tries it again (as in WizardLM). Every kept row records its lineage:
seed, parent, round, method, model, sampling parameters, token usage and each verdict.

All LLM calls go through the request cache, so a rerun after a crash repeats no call. Each
round reports its tokens and cost (``llm.price_per_million_*``), split into requests sent now
and answers taken from the cache (free now), and may be capped by ``evolve.budget_usd``: the
client sends no request whose worst case would take the round past the cap, lets the ones in
flight finish and be cached, and the stage stops with :class:`BudgetExceeded` (exit status 2)
before writing anything; rerunning with a higher cap resumes without repeating a call.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass

from wizardcoder.config import option, require
from wizardcoder.errors import ConfigError
from wizardcoder.evolve import filters
from wizardcoder.evolve.prompts import (
    DEFAULT_METHOD_WEIGHTS,
    METHODS,
    answer_messages,
    evolve_messages,
    judge_messages,
)
from wizardcoder.llm.limits import Budget, BudgetExceeded, Prices, usd
from wizardcoder.prompt_template import instruction_text

log = logging.getLogger(__name__)


@dataclass
class EvolveConfig:
    """params.yaml section `evolve` (shared by every round)."""

    methods: dict[str, float] = option(
        default_factory=lambda: dict(DEFAULT_METHOD_WEIGHTS),
        help=f"Sampling weight per evolution method (0 disables one). Methods: {list(METHODS)}.")
    seed: int = option(0, help="Seed of the per-row method choice and of the sampling seeds.")
    temperature: float = option(0.7, help="Sampling temperature of the evolution call.")
    top_p: float = option(0.95, help="Nucleus sampling of the evolution call.")
    evolve_max_tokens: int = option(256, help="max_tokens of the evolution call.")
    answer_temperature: float = option(0.2, help="Sampling temperature of the answer call.")
    answer_max_tokens: int = option(512, help="max_tokens of the answer call.")
    judge_max_tokens: int = option(8, help="max_tokens of the equality judge call.")
    eliminate: list[str] = option(
        default_factory=lambda: list(filters.RULES),
        help=f"Elimination rules switched on; any of {list(filters.RULES)}.")
    refusal_max_words: int = option(80, help="An answer shorter than this that apologises fails.")
    budget_usd: float = option(
        0.0, help="Spending cap of one round in USD (needs llm.price_per_million_*); 0 = no "
                  "cap. Answers from the request cache count at their recorded usage (paid "
                  "once), so a rerun with the same cap sends nothing new; raise it to resume.")

    def __post_init__(self):
        for name, weight in self.methods.items():
            if name not in METHODS:
                raise ConfigError(f"evolve.methods: unknown method {name!r}; "
                                  f"valid methods: {', '.join(METHODS)}")
            require(weight >= 0, "evolve", f"methods.{name}", "a weight >= 0")
        require(any(w > 0 for w in self.methods.values()), "evolve", "methods",
                "at least one method with a weight > 0")
        for rule in self.eliminate:
            if rule not in filters.RULES:
                raise ConfigError(f"evolve.eliminate: unknown rule {rule!r}; "
                                  f"valid rules: {', '.join(filters.RULES)}")
        require(0 <= self.temperature <= 2, "evolve", "temperature", "a number in [0, 2]")
        require(0 < self.top_p <= 1, "evolve", "top_p", "a number in (0, 1]")
        require(self.budget_usd >= 0, "evolve", "budget_usd", "a number of USD >= 0 (0 = no cap)")
        for name in ("evolve_max_tokens", "answer_max_tokens", "judge_max_tokens"):
            require(getattr(self, name) > 0, "evolve", name, "a positive integer")


def round_number(key: str) -> int:
    match = re.fullmatch(r"r(\d+)", key)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"rounds: key {key!r} is not a round name; expected r1, r2, ...")
    return int(match.group(1))


def _derived_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def choose_method(config: EvolveConfig, round_no: int, row_id: str) -> str:
    """The seeded, reproducible method choice for one row in one round."""
    names = [n for n, w in config.methods.items() if w > 0]
    weights = [config.methods[n] for n in names]
    rng = random.Random(_derived_int(config.seed, round_no, row_id, "method"))
    return rng.choices(names, weights=weights, k=1)[0]


STEPS = ("evolve", "answer", "judge")


class _Row:
    """Book-keeping of one row through the round."""

    def __init__(self, parent: dict, method: str):
        self.parent = parent
        self.method = method
        self.question = instruction_text(parent["instruction"], parent.get("input", ""))
        self.evolved = ""
        self.answer = ""
        self.verdicts = {rule: "skipped" for rule in filters.RULES}
        self.usage: dict[str, dict] = {}
        self.cached: dict[str, bool] = {}  # per step; metrics only, never in the data rows
        self.failed_rule: str | None = None

    def check(self, rule: str, failed: bool, enabled: list[str]) -> None:
        if self.failed_rule or rule not in enabled:
            return
        self.verdicts[rule] = "fail" if failed else "pass"
        if failed:
            self.failed_rule = rule


class RoundWork:
    """The requests of one round and what their answers decide, without any I/O.

    Shared by :func:`evolve_round` (answers from the client) and the dry run (answers only
    from the cache), so both build byte-identical requests and hence the same cache keys.
    """

    def __init__(self, rows: list[dict], config: EvolveConfig, round_key: str):
        self.config, self.key, self.no = config, round_key, round_number(round_key)
        self.work = [_Row(row, choose_method(config, self.no, row["id"])) for row in rows]

    def rows_for(self, step: str, rows: list[_Row] | None = None) -> list[_Row]:
        """Rows that need ``step`` now: all for evolve, survivors for answer and judge."""
        rows = self.work if rows is None else rows
        if step == "evolve":
            return list(rows)
        if step == "judge" and "judge_equal" not in self.config.eliminate:
            return []
        return [r for r in rows if not r.failed_rule]

    def request(self, row: _Row, step: str):
        from wizardcoder.llm.client import ChatRequest

        c = self.config
        if step == "evolve":
            messages = evolve_messages(row.question, row.method)
            max_tokens, temperature, top_p = c.evolve_max_tokens, c.temperature, c.top_p
        elif step == "answer":
            messages = answer_messages(row.evolved)
            max_tokens, temperature, top_p = c.answer_max_tokens, c.answer_temperature, 1.0
        else:
            messages = judge_messages(row.question, row.evolved)
            max_tokens, temperature, top_p = c.judge_max_tokens, 0.0, 1.0
        return ChatRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, seed=_derived_int(c.seed, self.no, row.parent["id"], step),
                           tag=f"{self.key}/{row.parent['id']}/{step}")

    def apply(self, step: str, row: _Row, text: str, finish_reason: str | None,
              prompt_tokens: int, completion_tokens: int, cached: bool) -> None:
        """Record one answer and run the elimination rules that it decides."""
        enabled = self.config.eliminate
        row.usage[step] = {"prompt_tokens": prompt_tokens or 0,
                           "completion_tokens": completion_tokens or 0}
        row.cached[step] = cached
        if step == "evolve":
            row.evolved = filters.clean_evolved(text)
            row.check("truncated", filters.is_truncated(finish_reason), enabled)
            row.check("empty", filters.is_empty(row.evolved), enabled)
            row.check("template_copy", filters.copies_template(row.evolved), enabled)
        elif step == "answer":
            row.answer = text.strip()
            row.check("truncated", filters.is_truncated(finish_reason), enabled)
            row.check("empty", filters.is_empty(row.answer), enabled)
            row.check("refusal", filters.is_refusal(row.answer, self.config.refusal_max_words),
                      enabled)
        else:
            row.check("judge_equal", filters.judge_says_equal(text), enabled)

    def outputs(self, model: str) -> tuple[list[dict], list[dict]]:
        c = self.config
        sampling = {"temperature": c.temperature, "top_p": c.top_p,
                    "evolve_max_tokens": c.evolve_max_tokens,
                    "answer_temperature": c.answer_temperature,
                    "answer_max_tokens": c.answer_max_tokens}
        output, rejected = [], []
        for row in self.work:
            parent = row.parent
            lineage = {
                "seed_id": parent["lineage"]["seed_id"],
                "parent_id": parent["id"],
                "round": self.no,
                "method": row.method,
                "model": model,
                "sampling": sampling,
                "usage": row.usage,
                "verdicts": row.verdicts,
            }
            if row.failed_rule:
                rejected.append({"parent_id": parent["id"], "instruction": row.evolved,
                                 "output": row.answer, "failed_rule": row.failed_rule,
                                 "lineage": lineage})
                output.append({**parent, "carried": True, "carried_in_round": self.no,
                               "carried_rule": row.failed_rule, "carried_method": row.method})
            else:
                child_id = f"r{self.no}-{_derived_int(parent['id'], self.no):08x}"
                output.append({"id": child_id, "instruction": row.evolved, "input": "",
                               "output": row.answer, "lineage": lineage})
        return output, rejected


def evolve_round(rows: list[dict], config: EvolveConfig, client, round_key: str,
                 model: str, progress: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Run one round; returns (output rows, rejected rows, stats).

    ``client`` is a :class:`wizardcoder.llm.client.LLMClient`. Raises
    :class:`~wizardcoder.llm.limits.BudgetExceeded` when ``config.budget_usd`` stops it and
    :class:`~wizardcoder.llm.client.LLMRequestError` when a request fails for good; in both
    cases every answer received is already in the request cache.
    """
    rnd = RoundWork(rows, config, round_key)
    prices: Prices = client.config.prices
    budget = Budget(config.budget_usd, prices, param="evolve.budget_usd",
                    scope=f"round {round_key}")
    if config.budget_usd and prices.free:
        log.warning("evolve.budget_usd=%g has no effect: llm.price_per_million_prompt_tokens "
                    "and llm.price_per_million_completion_tokens are 0", config.budget_usd)
    for step in STEPS:
        todo = rnd.rows_for(step)
        if not todo:
            continue
        requests = [rnd.request(r, step) for r in todo]
        desc = f"{round_key} {step}"
        _log_step(client, requests, budget, desc)
        results = client.chat_many(requests, desc=desc, progress=progress, budget=budget)
        for row, res in zip(todo, results, strict=True):
            rnd.apply(step, row, res.text, res.finish_reason, res.prompt_tokens,
                      res.completion_tokens, res.cached)
    output, rejected = rnd.outputs(model)
    return output, rejected, round_stats(rnd.work, round_key, prices, config.budget_usd)


def _log_step(client, requests, budget: Budget, desc: str) -> None:
    est = client.estimate(requests)
    worst = budget.prices.cost(est["prompt_tokens_est"], est["max_completion_tokens"])
    log.info("%s: %d requests, %d cached, %d to send (worst case %s); round spent so far %s%s",
             desc, est["requests"], est["requests"] - est["uncached_calls"],
             est["uncached_calls"], usd(worst), usd(budget.spent_usd),
             f" of cap {usd(budget.cap_usd)}" if budget.cap_usd else "")
    if budget.cap_usd and budget.spent_usd + worst > budget.cap_usd:
        log.warning("%s: the worst case would pass evolve.budget_usd=%s; requests stop at the "
                    "cap (answers so far stay cached)", desc, usd(budget.cap_usd))


def _tokens() -> dict:
    return {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}


def round_stats(work: list[_Row], round_key: str, prices: Prices | None = None,
                budget_usd: float = 0.0) -> dict:
    """Counts per rule and method, and tokens/cost split into network vs cache hits.

    ``cost_usd`` is what this run paid (network answers); cache hits cost nothing now, and
    ``cache.value_usd`` says what they cost when they were first paid for.
    """
    prices = prices or Prices()
    kept = [r for r in work if not r.failed_rule]
    dropped_rule = Counter(r.failed_rule for r in work if r.failed_rule)
    by_method = {m: {"kept": 0, "dropped": 0,
                     "dropped_by_rule": {rule: 0 for rule in filters.RULES}} for m in METHODS}
    for r in work:
        by_method[r.method]["dropped" if r.failed_rule else "kept"] += 1
        if r.failed_rule:
            by_method[r.method]["dropped_by_rule"][r.failed_rule] += 1
    network, cache = _tokens(), {**_tokens(), "value_usd": 0.0}
    by_step = {step: {**_tokens(), "cache_hits": 0} for step in STEPS}
    for r in work:
        for step, usage in r.usage.items():
            p, c = usage["prompt_tokens"], usage["completion_tokens"]
            cost = prices.cost(p, c)
            bucket = cache if r.cached[step] else network
            for target in (bucket, by_step[step]):
                target["requests"] += 1
                target["prompt_tokens"] += p
                target["completion_tokens"] += c
            if r.cached[step]:
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

    return {
        "round": round_key,
        "rows_in": len(work),
        "kept": len(kept),
        "dropped": len(work) - len(kept),
        "keep_rate": round(len(kept) / len(work), 4) if work else 0.0,
        "dropped_by_rule": {rule: dropped_rule.get(rule, 0) for rule in filters.RULES},
        "by_method": by_method,
        "calls": network["requests"] + cache["requests"],
        "cache_hits": cache["requests"],
        "network_calls": network["requests"],
        "prompt_tokens": network["prompt_tokens"] + cache["prompt_tokens"],
        "completion_tokens": network["completion_tokens"] + cache["completion_tokens"],
        "cost_usd": network["cost_usd"],
        "budget_usd": budget_usd,
        "network": network,
        "cache": cache,
        "by_step": by_step,
        "instruction_words": mean_words(r.evolved for r in kept),
        "response_words": mean_words(r.answer for r in kept),
    }


__all__ = ["BudgetExceeded", "EvolveConfig", "RoundWork", "STEPS", "choose_method",
           "evolve_round", "round_number", "round_stats"]
