"""One round of Code Evol-Instruct: evolve, judge, answer, eliminate.

Each row of the round's input is rewritten by the LLM with one method drawn (seeded, per
row) from the enabled methods, checked by the elimination rules, compared with its parent by
the equality judge and only then answered: the answer is the longest, most expensive call,
so a row the judge drops is never answered (the round's ``judge_first`` metrics count the
calls that saved). A failed evolution is dropped and its parent is carried into the round's
output, so the next round tries it again (as in WizardLM). So is a row whose LLM request
failed permanently, for its own reason (verdict ``request_error`` with its class:
context_length, content_filter, bad_request, empty_content); more such rows than
``evolve.max_failed_fraction`` of the round (at least ``max_failed_rows_min``) fail the
stage, and the metrics list each (``failed_rows``). A transient failure (429, 5xx, timeouts,
a batch line never run) is retried by the client (online: ``llm.max_retries``; batch:
``llm.batch_retries`` follow-up batches); one still failing stops the stage after its step
(:class:`TransientFailuresLeft`), so a row is never dropped for it in a run that succeeds
(DVC would never rerun that run). Every kept row records its
lineage: seed, parent, round, method, the models asked and the ones that answered, sampling
parameters, token usage and each verdict. With ``evolve.verify: tests`` the answers then
run their own tests in the scoring sandbox (:mod:`wizardcoder.evolve.verify`): a row is kept
only when one of its ``verify_attempts`` answers passes, else eliminated (``no_python`` /
``failed_tests``) with its parent carried.

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

from wizardcoder.errors import ConfigError, WizardcoderError
from wizardcoder.evolve import filters
from wizardcoder.evolve.config import EvolveConfig
from wizardcoder.evolve.prompts import (
    answer_messages,
    evolve_messages,
    judge_messages,
    tests_messages,
)
from wizardcoder.evolve.stats import failure_counts, round_stats
from wizardcoder.evolve.verify import (
    Attempt,
    Sandbox,
    verify_answers,
    verify_stats,
)
from wizardcoder.llm.config import STEP_NAMES
from wizardcoder.llm.limits import Budget, BudgetExceeded, Prices, usd
from wizardcoder.prompt_template import instruction_text
from wizardcoder.rounds import round_number

log = logging.getLogger(__name__)


class TooManyFailedRows(WizardcoderError):
    """More rows failed their LLM request than ``evolve.max_failed_fraction`` allows."""

    def __init__(self, round_key: str, rows: int, counts: dict, limit: int, fraction: float,
                 examples: list[str], not_sent: int = 0):
        self.counts = counts
        failed = counts["total"]
        by_class = ", ".join(f"{k} {v}" for k, v in counts["by_class"].items() if v)
        by_step = ", ".join(f"{k} {v}" for k, v in counts["by_step"].items() if v)
        stopped = f"; sending stopped, {not_sent} request(s) not sent" if not_sent else ""
        super().__init__(
            f"evolve {round_key}: {failed} of {rows} rows failed their LLM request "
            f"permanently ({failed / rows:.1%}), above evolve.max_failed_fraction="
            f"{fraction:g} ({limit} row(s) allowed, evolve.max_failed_rows_min at least): "
            f"{by_class} (by step: {by_step}){stopped}. Nothing was written. Failed rows: "
            f"{'; '.join(examples[:MAX_NAMED])}"
            + (f" (and {failed - len(examples[:MAX_NAMED])} more)"
               if failed > len(examples[:MAX_NAMED]) else "")
            + ". Permanent failures are cached and replayed by a rerun (fix their cause -- see "
            "llm.token_limit_param, llm.fixed_temperature, max_tokens -- then rerun with "
            "llm.resend_cached_errors: true, or raise evolve.max_failed_fraction).")


class TransientFailuresLeft(WizardcoderError):
    """Requests still failing transiently (429, 5xx, timeouts, batch lines never run) after
    every retry: the stage stops rather than drop their rows; a rerun retries them."""

    def __init__(self, round_key: str, step: str, failed: list[tuple[str, str]]):
        self.failed = failed
        named = "; ".join(f"{tag}: {message[:200]}" for tag, message in failed[:MAX_NAMED])
        more = f" (and {len(failed) - MAX_NAMED} more)" if len(failed) > MAX_NAMED else ""
        super().__init__(
            f"evolve {round_key} {step}: {len(failed)} request(s) still failed transiently "
            f"after every retry (llm.max_retries online, llm.batch_retries follow-up batches "
            f"in batch mode): {named}{more}. Their rows are not dropped: nothing was written "
            f"and every answer so far is in the request cache, so rerunning the stage resumes "
            f"here, sends only these again and pays for nothing twice.")


MAX_NAMED = 20  # failed rows named in an error message (the metrics list them all)


def _derived_int(*parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def choose_method(config: EvolveConfig, round_no: int, row_id: str) -> str:
    """The seeded, reproducible method choice for one row in one round."""
    names = [n for n, w in config.methods.items() if w > 0]
    weights = [config.methods[n] for n in names]
    rng = random.Random(_derived_int(config.seed, round_no, row_id, "method"))
    return rng.choices(names, weights=weights, k=1)[0]


# The order of the calls ("evolve", "judge", "answer"): the judge needs only the two
# questions, so it runs before the answer and a row it drops is never answered.
STEPS = STEP_NAMES


def uses_judge(config: EvolveConfig) -> bool:
    """Whether the round asks the equality judge (its rule, judge_equal, is enabled)."""
    return "judge_equal" in config.eliminate


class _Row:
    """Book-keeping of one row through the round."""

    def __init__(self, parent: dict, method: str):
        self.parent = parent
        self.method = method
        self.question = instruction_text(parent["instruction"], parent.get("input", ""))
        self.evolved = ""
        self.answer = ""
        self.verdicts = {rule: "skipped" for rule in filters.VERDICTS}
        self.verdicts[filters.REQUEST_ERROR] = "pass"
        self.usage: dict[str, dict] = {}   # per step, summed over verification attempts
        self.models: dict[str, dict] = {}  # per step: the model asked, the one that answered
        # (step, prompt tokens, completion tokens, from the cache) of every call; metrics only
        self.calls: list[tuple[str, int, int, bool]] = []
        self.attempts: list[Attempt] = []  # evolve.verify: tests
        self.failed_rule: str | None = None
        self.error: dict | None = None  # {"class", "step", "message"} of a request_error

    def check(self, rule: str, failed: bool, enabled: list[str]) -> None:
        if self.failed_rule or rule not in enabled:
            return
        self.verdicts[rule] = "fail" if failed else "pass"
        if failed:
            self.failed_rule = rule

    def request_failed(self, step: str, error: str, message: str) -> None:
        self.verdicts[filters.REQUEST_ERROR] = "fail"
        self.failed_rule = filters.REQUEST_ERROR
        self.error = {"class": error, "step": step, "message": message}


class RoundWork:
    """The requests of one round and what their answers decide, without any I/O.

    Shared by :func:`evolve_round` (answers from the client) and the dry run (answers only
    from the cache), so both build byte-identical requests and hence the same cache keys.
    ``llm``: the :class:`~wizardcoder.llm.config.LLMConfig` (per-step models, fixed
    temperature); None = one model, sampling as configured.
    """

    def __init__(self, rows: list[dict], config: EvolveConfig, round_key: str, llm=None):
        self.config, self.key, self.no = config, round_key, round_number(round_key)
        self.llm = llm
        self.work = [_Row(row, choose_method(config, self.no, row["id"])) for row in rows]

    def needs(self, row: _Row, step: str) -> bool:
        """Whether ``row`` is asked ``step`` once the steps before it are applied: every row
        is evolved; survivors are judged (when the judge is on) and answered."""
        if step == "evolve":
            return True
        if step == "judge" and not uses_judge(self.config):
            return False
        return not row.failed_rule

    def rows_for(self, step: str, rows: list[_Row] | None = None) -> list[_Row]:
        """Rows that need ``step`` now (see :meth:`needs`)."""
        return [r for r in (self.work if rows is None else rows) if self.needs(r, step)]

    def model_for(self, step: str) -> str | None:
        """The model named for ``step`` in llm.step_models; None = llm.model."""
        return self.llm.step_models.get(step) if self.llm is not None else None

    @property
    def inline_tests(self) -> bool:
        return self.config.verify == "tests" and self.config.verify_tests == "inline"

    def request(self, row: _Row, step: str, attempt: int = 1, answer: str = ""):
        """The request of ``step``; ``attempt`` > 1: a verification retry of the answer (a
        seed of its own), ``step`` "tests": the test-writing call for ``answer``."""
        from wizardcoder.llm.client import ChatRequest

        c = self.config
        seed = _derived_int(c.seed, self.no, row.parent["id"], step)
        tag, model = f"{self.key}/{row.parent['id']}/{step}", self.model_for(step)
        if attempt > 1 or step == "tests":
            seed = _derived_int(c.seed, self.no, row.parent["id"], step, attempt)
            tag += f"#{attempt}"
        if step == "evolve":
            messages = evolve_messages(row.question, row.method)
            max_tokens, temperature, top_p = c.evolve_max_tokens, c.temperature, c.top_p
        elif step == "answer":
            messages = answer_messages(row.evolved, with_tests=self.inline_tests)
            max_tokens, temperature, top_p = c.answer_max_tokens, c.answer_temperature, 1.0
        elif step == "tests":  # written by the answer model
            messages = tests_messages(row.evolved, answer)
            max_tokens, temperature, top_p = c.answer_max_tokens, c.answer_temperature, 1.0
            model = self.model_for("answer")
        else:
            messages = judge_messages(row.question, row.evolved)
            max_tokens, temperature, top_p = c.judge_max_tokens, 0.0, 1.0
        return ChatRequest(messages=messages, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, seed=seed, tag=tag, model=model)

    def record(self, step: str, row: _Row, result) -> None:
        """Usage, models and cache state of one call (any step, any attempt)."""
        used = row.usage.setdefault(step, {"prompt_tokens": 0, "completion_tokens": 0})
        used["prompt_tokens"] += result.prompt_tokens or 0
        used["completion_tokens"] += result.completion_tokens or 0
        row.calls.append((step, result.prompt_tokens or 0, result.completion_tokens or 0,
                          bool(result.cached)))
        model_step = "answer" if step == "tests" else step
        asked = self.model_for(model_step) or (self.llm.model if self.llm is not None
                                               else None)
        row.models[step] = {"asked": asked, "served": result.model}

    def apply(self, step: str, row: _Row, result) -> None:
        """Record one result (a :class:`~wizardcoder.llm.client.ChatResult`) and run the
        elimination rules that it decides."""
        enabled = self.config.eliminate
        self.record(step, row, result)
        if result.error is not None:
            row.request_failed(step, result.error, result.error_message)
            return
        text, finish_reason = result.text, result.finish_reason
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
        fixed = self.llm is not None and self.llm.fixed_temperature
        sampling = {"temperature": None if fixed else c.temperature,
                    "top_p": None if fixed else c.top_p,
                    "evolve_max_tokens": c.evolve_max_tokens,
                    "answer_temperature": None if fixed else c.answer_temperature,
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
                "models": row.models,
                "sampling": sampling,
                "usage": row.usage,
                "verdicts": row.verdicts,
            }
            if row.attempts:
                last = row.attempts[-1]
                lineage["verify"] = {"attempts": len(row.attempts), "tests": last.test_count,
                                     "kind": last.kind, "mode": c.verify_tests}
            if row.failed_rule:
                failed = {"parent_id": parent["id"], "instruction": row.evolved,
                          "output": row.answer, "failed_rule": row.failed_rule}
                if row.attempts:
                    failed["verify_detail"] = row.attempts[-1].detail
                carried = {**parent, "carried": True, "carried_in_round": self.no,
                           "carried_rule": row.failed_rule, "carried_method": row.method}
                if row.error is not None:
                    failed["error"] = row.error
                    carried["carried_error"] = row.error["class"]
                rejected.append({**failed, "lineage": lineage})
                output.append(carried)
            else:
                child_id = f"r{self.no}-{_derived_int(parent['id'], self.no):08x}"
                child = {"id": child_id, "instruction": row.evolved, "input": "",
                         "output": row.answer, "lineage": lineage}
                if row.attempts:
                    child["tests"] = row.attempts[-1].tests
                output.append(child)
        return output, rejected


def evolve_round(rows: list[dict], config: EvolveConfig, client, round_key: str,
                 model: str, progress: bool = True,
                 sandbox: Sandbox | None = None) -> tuple[list[dict], list[dict], dict]:
    """Run one round; returns (output rows, rejected rows, stats).

    ``client`` is a :class:`wizardcoder.llm.client.LLMClient`. Raises
    :class:`~wizardcoder.llm.limits.BudgetExceeded` when ``config.budget_usd`` stops it,
    :class:`TooManyFailedRows` when more rows failed their request permanently than
    ``config.max_failed_rows`` allows, :class:`TransientFailuresLeft` when a request still
    failed transiently after every retry, and
    :class:`~wizardcoder.llm.client.LLMRequestError` for a failure every request shares
    (401, 404...); in every case each answer received is already in the request cache.
    ``sandbox``: where ``config.verify: tests`` runs the answers' tests (required then).
    """
    if config.verify == "tests" and sandbox is None:
        raise ConfigError("evolve.verify: tests needs the sandbox (the `score` section)")
    rnd = RoundWork(rows, config, round_key, client.config)
    prices: Prices = client.config.prices
    budget = Budget(config.budget_usd, prices, param="evolve.budget_usd",
                    scope=f"round {round_key}")
    if config.budget_usd and prices.free:
        log.warning("evolve.budget_usd=%g has no effect: llm.price_per_million_prompt_tokens "
                    "and llm.price_per_million_completion_tokens are 0", config.budget_usd)
    limit = config.max_failed_rows(len(rnd.work))

    def send(step: str, todo: list[_Row], requests: list, desc: str) -> list:
        """The results of ``requests`` (one per row of ``todo``), counting failures."""
        from wizardcoder.llm.client import TRANSIENT, TooManyRequestErrors

        _log_step(client, requests, budget, desc)
        allowed = limit - failure_counts(rnd.work)["total"]
        try:
            results = client.chat_many(requests, desc=desc, progress=progress, budget=budget,
                                       max_errors=allowed)
        except TooManyRequestErrors as exc:
            counts = failure_counts(rnd.work)
            counts["total"] += sum(exc.counts.values())
            for cls, n in exc.counts.items():
                counts["by_class"][cls] += n
            counts["by_step"][step] += sum(exc.counts.values())
            raise TooManyFailedRows(round_key, len(rnd.work), counts, limit,
                                    config.max_failed_fraction,
                                    _examples(rnd.work, round_key) + exc.examples,
                                    exc.not_sent) from None
        left = [(r.tag, r_.error_message) for r, r_ in zip(requests, results, strict=True)
                if r_.error == TRANSIENT]
        if left:
            raise TransientFailuresLeft(round_key, step, left)
        return results

    for step in STEPS:
        todo = rnd.rows_for(step)
        if not todo:
            continue
        results = send(step, todo, [rnd.request(r, step) for r in todo], f"{round_key} {step}")
        for row, res in zip(todo, results, strict=True):
            rnd.apply(step, row, res)
    verify_s = verify_answers(rnd, send, sandbox) if config.verify == "tests" else 0.0
    counts = failure_counts(rnd.work)
    if counts["total"] > limit:  # a safety net: each step already stopped at its share
        raise TooManyFailedRows(round_key, len(rnd.work), counts, limit,
                                config.max_failed_fraction, _examples(rnd.work, round_key))
    if counts["total"]:
        log.warning("evolve %s: %d row(s) dropped for a permanent request failure (%d "
                    "allowed; each is in the metrics' failed_rows): %s", round_key,
                    counts["total"], limit, ", ".join(
                        f"{r.parent['id']} ({r.error['step']}: {r.error['class']})"
                        for r in rnd.work if r.error)[:MAX_NAMED * 40])
    output, rejected = rnd.outputs(model)
    stats = round_stats(rnd.work, round_key, prices, config)
    if config.verify == "tests":
        stats["verify"], stats["verify_rows"] = verify_stats(rnd.work, verify_s, sandbox)
    return output, rejected, stats


def _examples(work, round_key: str) -> list[str]:
    """Every failed row, named like the client names its request (the request's tag)."""
    return [f"'{round_key}/{r.parent['id']}/{r.error['step']}': {r.error['class']}: "
            f"{r.error['message'][:200]}" for r in work if r.error]


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


__all__ = ["BudgetExceeded", "EvolveConfig", "RoundWork", "STEPS", "TooManyFailedRows",
           "TransientFailuresLeft",
           "choose_method", "evolve_round", "round_number", "round_stats", "usd",
           "uses_judge"]
