"""``wizardcoder evolve --round rN --dry-run``: what a round would send and cost.

Reads only params, the round's input and the request cache: no request, no server start,
no key, no output, no MLflow run.
"""

from __future__ import annotations

from pathlib import Path

from wizardcoder.evolve.config import EvolveConfig, load_configs
from wizardcoder.evolve.engine import STEPS, RoundWork, uses_judge
from wizardcoder.evolve.prompts import (
    METHODS,
    answer_messages,
    evolve_messages,
    judge_messages,
    tests_messages,
)
from wizardcoder.evolve.verify import verify_calls
from wizardcoder.llm.config import LLMConfig
from wizardcoder.llm.limits import Prices, usd
from wizardcoder.llm.server import model_identity
from wizardcoder.llm.wire import ChatResult, Wire, estimate_prompt_tokens
from wizardcoder.prompt_template import instruction_text
from wizardcoder.rounds import read_round_input, round_input, round_number


def _existing_cache():
    """The request cache if it exists (None otherwise): a dry run never creates one."""
    from wizardcoder.llm.cache import CACHE_FILE, RequestCache
    from wizardcoder.paths import cache_dir

    path = cache_dir() / CACHE_FILE
    return RequestCache(path) if path.exists() else None


class _Plan:
    def __init__(self, prices: Prices):
        self.prices = prices
        self.figures = {"evolve_calls": 0, "evolve_cached": 0, "evolve_to_send": 0,
                        "later_calls_max": 0, "later_cached": 0, "later_to_send_max": 0,
                        "verify_calls_max": 0, "verify_cached": 0, "verify_to_send_max": 0,
                        "cached_request_errors": 0,
                        "prompt_tokens_est": 0, "max_completion_tokens": 0,
                        "min_usd": 0.0, "max_usd": 0.0, "cached_usd": 0.0}

    @staticmethod
    def _group(step: str) -> tuple[str, str, str]:
        """(calls, cached, to send) figure names of a step; "verify": evolve.verify's
        extra calls (answers sampled again, test-writing calls)."""
        if step == "evolve":
            return "evolve_calls", "evolve_cached", "evolve_to_send"
        if step == "verify":
            return "verify_calls_max", "verify_cached", "verify_to_send_max"
        return "later_calls_max", "later_cached", "later_to_send_max"

    def cached(self, step: str, hit) -> None:
        f = self.figures
        calls, cached, _ = self._group(step)
        f[calls] += 1
        f[cached] += 1
        f["cached_request_errors"] += hit.error is not None
        f["cached_usd"] += self.prices.cost(hit.prompt_tokens or 0, hit.completion_tokens or 0)

    def send(self, step: str, prompt_tokens: int, max_tokens: int, certain: bool) -> None:
        f = self.figures
        calls, _, to_send = self._group(step)
        f[calls] += 1
        f[to_send] += 1
        f["prompt_tokens_est"] += prompt_tokens
        f["max_completion_tokens"] += max_tokens
        f["max_usd"] += self.prices.cost(prompt_tokens, max_tokens)
        if certain:
            f["min_usd"] += self.prices.cost(prompt_tokens, 0)


def plan_round(rows: list[dict], config: EvolveConfig, round_key: str, llm: LLMConfig,
               cache, prices: Prices) -> dict:
    """Calls and cost of a round whose input exists: exact where the cache decides a step,
    upper bounds where a step's prompt depends on an answer not known yet."""
    wire = Wire(llm, lambda model: model_identity(llm, model))

    def replayed(req):
        """What the client would take from the cache for ``req`` (None: it would send it)."""
        if cache is None:
            return None
        return cache.lookup(wire.key(req), resend_errors=llm.resend_cached_errors)

    return _walk(RoundWork(rows, config, round_key, llm), config, replayed, _Plan(prices))


def _walk(rnd: RoundWork, config: EvolveConfig, replayed, plan: _Plan) -> dict:
    evolved_max = config.evolve_max_tokens  # an evolved question has at most this many tokens
    max_tokens = {"judge": config.judge_max_tokens, "answer": config.answer_max_tokens}
    for row in rnd.work:
        certain = True  # the request will be sent whatever the answers before it say
        for step in STEPS:  # the order evolve_round runs them in
            if not rnd.needs(row, step):
                continue
            if step != "evolve" and "evolve" not in row.usage:
                # The evolved question is unknown: bound its length by evolve_max_tokens.
                messages = (answer_messages("") if step == "answer"
                            else judge_messages(row.question, ""))
                plan.send(step, estimate_prompt_tokens(messages) + evolved_max,
                          max_tokens[step], certain=False)
                continue
            req = rnd.request(row, step)
            hit = replayed(req) if certain else None
            if hit is None:
                plan.send(step, req.estimated_prompt_tokens(), req.max_tokens, certain)
                certain = False  # later steps depend on this answer
                if step == "evolve":
                    continue  # bound judge and answer below
                if step == "judge":
                    plan.send("answer", estimate_prompt_tokens(answer_messages(row.evolved)),
                              config.answer_max_tokens, certain=False)
                break
            plan.cached(step, hit)
            rnd.apply(step, row, ChatResult.from_cache(hit, cached=True))
        if config.verify == "tests" and not row.failed_rule:
            _plan_verify(rnd, row, replayed, plan)
    return {"rows": len(rnd.work), **plan.figures}


def _plan_verify(rnd: RoundWork, row, replayed, plan: _Plan) -> None:
    """evolve.verify: tests: at most verify_attempts - 1 answers sampled again, plus one
    test-writing call per attempt (verify_tests: separate). Exact where the cache holds a
    call whose prompt is known (the retries of a known question; the first attempt's tests
    call once its answer is cached); the sandbox decides how many attempts a row uses, so
    the rest are upper bounds."""
    config = rnd.config
    evolved = row.evolved if "evolve" in row.usage else None
    question = estimate_prompt_tokens(answer_messages("", True)) + (
        estimate_prompt_tokens([{"content": evolved}]) if evolved is not None
        else config.evolve_max_tokens)
    for attempt in range(1, config.verify_attempts + 1):
        for call in verify_calls(config, attempt):
            if call == "answer":  # sampled again: its prompt is the question's
                req = rnd.request(row, "answer", attempt) if evolved is not None else None
                prompt = question
            else:  # the tests call's prompt holds the answer: known for the first one only
                req = rnd.request(row, "tests", attempt, row.answer) \
                    if "answer" in row.usage and attempt == 1 else None
                prompt = (estimate_prompt_tokens(tests_messages("", "")) + question
                          + config.answer_max_tokens)
            hit = replayed(req) if req is not None else None
            if hit is not None:
                plan.cached("verify", hit)
            else:
                plan.send("verify", prompt, config.answer_max_tokens, certain=False)


def _bound_missing(rows: list[dict], config: EvolveConfig, plan: _Plan) -> dict:
    """Upper bounds for a round whose input does not exist yet, from an earlier input:
    every round keeps the row count, and a question is either an earlier one (carried) or
    an evolved one of at most evolve_max_tokens tokens."""
    longest = max(METHODS, key=lambda m: len(METHODS[m]))
    shortest = min(METHODS, key=lambda m: len(METHODS[m]))
    tokens = estimate_prompt_tokens
    e = config.evolve_max_tokens
    verify_extra = sum(len(verify_calls(config, attempt))
                       for attempt in range(1, config.verify_attempts + 1))
    for row in rows:
        q = max(tokens([{"content": instruction_text(row["instruction"],
                                                     row.get("input", ""))}]), e)
        plan.send("evolve", tokens(evolve_messages("", longest)) + q, e, certain=False)
        plan.figures["min_usd"] += plan.prices.cost(tokens(evolve_messages("", shortest)), 0)
        plan.send("answer", tokens(answer_messages("")) + e, config.answer_max_tokens, False)
        if uses_judge(config):
            plan.send("judge", tokens(judge_messages("", "")) + q + e,
                      config.judge_max_tokens, False)
        if config.verify == "tests":
            for _ in range(verify_extra):
                plan.send("verify", tokens(answer_messages("", True)) + e
                          + config.answer_max_tokens, config.answer_max_tokens, False)
    return {"rows": len(rows), **plan.figures}


def dry_run(params: str, round_key: str, input_path: str, echo=print) -> dict:
    """Print (and return) the round's calls, tokens and cost range; sends nothing."""
    n = round_number(round_key)
    llm_config, config = load_configs(params, round_key, input_path)
    prices, identity = llm_config.prices, model_identity(llm_config)
    steps = {step: llm_config.step_models[step] for step in STEPS
             if step in llm_config.step_models}
    echo(f"dry run of evolve {round_key}: no request sent, no server started, nothing written")
    echo(f"  model identity     {identity}")
    for step, name in steps.items():
        echo(f"  {step + ' model':<18} {model_identity(llm_config, name)}")
    result: dict = {"round": round_key, "input": input_path, "input_exists": True}
    if Path(input_path).exists():
        rows = read_round_input(input_path)
        cache = _existing_cache()
        try:
            figures = plan_round(rows, config, round_key, llm_config, cache, prices)
        finally:
            if cache is not None:
                cache.close()
        echo(f"  input              {input_path}: {len(rows)} rows")
    else:
        result["input_exists"] = False
        earlier = [round_input(k) for k in range(n - 1, 0, -1) if Path(round_input(k)).exists()]
        if not earlier:
            also = ", nor does any earlier round's input" if n > 1 else ""
            echo(f"  input              {input_path} does not exist yet{also}: run the seed "
                 f"stage first (dvc repro seed)")
            return {**result, "rows": None}
        rows = read_round_input(earlier[0])
        figures = _bound_missing(rows, config, _Plan(prices))
        echo(f"  input              {input_path} does not exist yet (run the earlier rounds "
             f"first); upper bounds from {earlier[0]} ({len(rows)} rows; every round keeps "
             f"the row count); cache not consulted")
    f = figures
    echo(f"  evolve calls       {f['evolve_calls']} needed: {f['evolve_cached']} cached, "
         f"{f['evolve_to_send']} to send")
    echo(f"  judge+answer calls at most {f['later_calls_max']}: {f['later_cached']} cached, "
         f"at most {f['later_to_send_max']} to send (a row the judge drops is not answered)")
    if config.verify == "tests":
        echo(f"  verify calls       at most {f['verify_calls_max']} more (evolve.verify: tests, "
             f"{config.verify_attempts} attempt(s), tests {config.verify_tests}): "
             f"{f['verify_cached']} cached, at most {f['verify_to_send_max']} to send; each "
             f"answer also runs in the sandbox (score's limits: timeout_s per run)")
    if f["cached_request_errors"]:
        echo(f"  request errors     {f['cached_request_errors']} cached (replayed, not resent; "
             f"llm.resend_cached_errors: true resends them)")
    echo(f"  prompt tokens      ~{f['prompt_tokens_est']:,} at most, to send (estimate: "
         f"chars/4)")
    echo(f"  completion tokens  {f['max_completion_tokens']:,} at most, to send (max_tokens)")
    if prices.free:
        echo("  cost               unpriced: set llm.price_per_million_prompt_tokens and "
             "llm.price_per_million_completion_tokens")
    else:
        echo(f"  cost               {usd(f['min_usd'])} .. {usd(f['max_usd'])} to send now "
             f"(cache hits are free now; they cost {usd(f['cached_usd'])} when first paid)")
    cap = config.budget_usd
    if not cap:
        verdict = "no cap (evolve.budget_usd = 0)"
    elif prices.free:
        verdict = f"{usd(cap)}, but without prices it cannot stop anything"
    elif f["cached_usd"] + f["max_usd"] <= cap:
        verdict = f"{usd(cap)}: the round fits even in the worst case"
    elif f["cached_usd"] + f["min_usd"] > cap:
        verdict = f"{usd(cap)}: the round will stop at the cap (raise evolve.budget_usd)"
    else:
        verdict = f"{usd(cap)}: the round may stop at the cap (worst case " \
                  f"{usd(f['cached_usd'] + f['max_usd'])} counting cached answers)"
    echo(f"  budget             {verdict}")
    return {**result, **{k: round(v, 6) if isinstance(v, float) else v
                         for k, v in figures.items()}, "budget_usd": cap}
