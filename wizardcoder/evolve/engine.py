"""One round of Code Evol-Instruct: evolve, answer, judge, eliminate.

Each row of the round's input is rewritten by the LLM with one method drawn (seeded, per
row) from the enabled methods, answered by the same LLM, and checked by the elimination
rules. A failed evolution is dropped and its parent is carried into the round's output,
so the next round tries it again (as in WizardLM). Every kept row records its lineage:
seed, parent, round, method, model, sampling parameters, token usage and each verdict.

All LLM calls go through the request cache, so a rerun after a crash repeats no call.
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


def _usage(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "cached": result.cached}


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
        self.failed_rule: str | None = None

    def check(self, rule: str, failed: bool, enabled: list[str]) -> None:
        if self.failed_rule or rule not in enabled:
            return
        self.verdicts[rule] = "fail" if failed else "pass"
        if failed:
            self.failed_rule = rule


def evolve_round(rows: list[dict], config: EvolveConfig, client, round_key: str,
                 model: str) -> tuple[list[dict], list[dict], dict]:
    """Run one round; returns (output rows, rejected rows, stats).

    ``client`` is an LLM client with ``chat_many(requests, desc)``
    (:class:`wizardcoder.llm.client.LLMClient`).
    """
    from wizardcoder.llm.client import ChatRequest

    round_no = round_number(round_key)
    work = [_Row(row, choose_method(config, round_no, row["id"])) for row in rows]
    enabled = config.eliminate

    def request(row: _Row, step: str, messages, max_tokens, temperature, top_p=1.0):
        return ChatRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, seed=_derived_int(config.seed, round_no,
                                                          row.parent["id"], step),
                           tag=f"{round_key}/{row.parent['id']}/{step}")

    results = client.chat_many(
        [request(r, "evolve", evolve_messages(r.question, r.method), config.evolve_max_tokens,
                 config.temperature, config.top_p) for r in work],
        desc=f"{round_key} evolve")
    for row, result in zip(work, results, strict=True):
        row.usage["evolve"] = _usage(result)
        row.evolved = filters.clean_evolved(result.text)
        row.check("truncated", filters.is_truncated(result.finish_reason), enabled)
        row.check("empty", filters.is_empty(row.evolved), enabled)
        row.check("template_copy", filters.copies_template(row.evolved), enabled)

    alive = [r for r in work if not r.failed_rule]
    results = client.chat_many(
        [request(r, "answer", answer_messages(r.evolved), config.answer_max_tokens,
                 config.answer_temperature) for r in alive],
        desc=f"{round_key} answer")
    for row, result in zip(alive, results, strict=True):
        row.usage["answer"] = _usage(result)
        row.answer = result.text.strip()
        row.check("truncated", filters.is_truncated(result.finish_reason), enabled)
        row.check("empty", filters.is_empty(row.answer), enabled)
        row.check("refusal", filters.is_refusal(row.answer, config.refusal_max_words), enabled)

    if "judge_equal" in enabled:
        alive = [r for r in work if not r.failed_rule]
        results = client.chat_many(
            [request(r, "judge", judge_messages(r.question, r.evolved), config.judge_max_tokens,
                     0.0) for r in alive],
            desc=f"{round_key} judge")
        for row, result in zip(alive, results, strict=True):
            row.usage["judge"] = _usage(result)
            row.check("judge_equal", filters.judge_says_equal(result.text), enabled)

    sampling = {"temperature": config.temperature, "top_p": config.top_p,
                "evolve_max_tokens": config.evolve_max_tokens,
                "answer_temperature": config.answer_temperature,
                "answer_max_tokens": config.answer_max_tokens}
    output, rejected = [], []
    for row in work:
        parent = row.parent
        lineage = {
            "seed_id": parent["lineage"]["seed_id"],
            "parent_id": parent["id"],
            "round": round_no,
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
            output.append({**parent, "carried": True, "carried_in_round": round_no,
                           "carried_rule": row.failed_rule, "carried_method": row.method})
        else:
            child_id = f"r{round_no}-{_derived_int(parent['id'], round_no):08x}"
            output.append({"id": child_id, "instruction": row.evolved, "input": "",
                           "output": row.answer, "lineage": lineage})
    return output, rejected, round_stats(work, round_key)


def round_stats(work: list[_Row], round_key: str) -> dict:
    kept = [r for r in work if not r.failed_rule]
    dropped_rule = Counter(r.failed_rule for r in work if r.failed_rule)
    by_method = {m: {"kept": 0, "dropped": 0} for m in METHODS}
    for r in work:
        by_method[r.method]["dropped" if r.failed_rule else "kept"] += 1
    tokens = Counter()
    calls = cached = 0
    for r in work:
        for usage in r.usage.values():
            calls += 1
            cached += int(usage["cached"])
            tokens["prompt_tokens"] += usage["prompt_tokens"] or 0
            tokens["completion_tokens"] += usage["completion_tokens"] or 0

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
        "calls": calls,
        "cache_hits": cached,
        **dict(tokens),
        "instruction_words": mean_words(r.evolved for r in kept),
        "response_words": mean_words(r.answer for r in kept),
    }
