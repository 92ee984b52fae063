"""Concurrent, rate-limited, retrying and cached chat completions against any OpenAI-compatible API.

Evolution sends thousands of independent requests; doing that well is the difference between
a stage that finishes overnight and one that burns money. The policy lives here, in one place:
a bounded number of requests in flight, client-side RPM/TPM pacing, Retry-After honoured on
429 (and shared by all workers so they back off together), full-jitter exponential backoff
for transient failures, and an optional spending cap (:class:`~wizardcoder.llm.limits.Budget`).
A request that fails for its own reason (a 400 for its length or content, a content filter,
no content, retries exhausted) comes back as that request's failure -- never a silent empty
answer that would end up as training data, and never a reason to stop thousands of others;
a failure every request would share (401, 403, 404, a server that refuses the connection:
see :mod:`wizardcoder.llm.endpoint`) or any other exception in a worker stops new sends at
once. Every answer, and every permanent failure, is committed to the
:class:`RequestCache` before it is returned, so a killed stage loses nothing it paid for.

Requests go over aiohttp straight to ``{base_url}/chat/completions`` (the wire format is one
small JSON object each way, built and parsed in :mod:`wizardcoder.llm.wire`). The openai SDK
was the transport before: its request transformation and HTTP stack cost ~2 ms of CPU per
request, which held 32 requests in flight to ~0.7x of the ideal rate against a 200 ms server;
aiohttp costs ~0.2 ms (``python bench/evolve.py`` measures both). The cache commit (an fsync)
runs in a worker thread so it never stalls the event loop that the other requests share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from wizardcoder.errors import WizardcoderError
from wizardcoder.llm.batch import cancel_unfinished, prefetch
from wizardcoder.llm.cache import CachedResponse, RequestCache
from wizardcoder.llm.config import LLMConfig
from wizardcoder.llm.endpoint import Endpoint, is_connection_refused, is_loopback
from wizardcoder.llm.limits import (  # noqa: F401  (re-exported: the public names live here)
    Budget,
    BudgetExceeded,
    Prices,
    RateLimiter,
    parse_retry_after,
)
from wizardcoder.llm.wire import (  # noqa: F401  (ChatRequest/ChatResult: public names here too)
    ChatRequest,
    ChatResult,
    Completion,
    MalformedResponse,
    Wire,
    classify_http_error,
    error_message,
    parse_completion,
)

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 3600.0
# The class of a request that kept failing transiently (429, 5xx, timeouts) through every
# retry: not the request's own fault, never cached, and not counted against ``max_errors``
# (a row must not be dropped for it: the caller stops and a rerun retries it).
TRANSIENT = "retries_exhausted"


class LLMRequestError(WizardcoderError):
    """A failure that every request would share (401, 403, 404, ...): the stage stops.

    A failure that concerns one request (its size, its content, retries exhausted) is not
    raised: it comes back as that request's :class:`ChatResult` with ``error`` set."""

    def __init__(self, tag: str, attempts: int, last_error: str):
        self.tag, self.attempts, self.last_error = tag, attempts, last_error
        super().__init__(
            f"LLM request {tag or '<untagged>'!r} failed with an error that is not the "
            f"request's own (check llm.base_url, llm.model, the key and its permissions) after "
            f"{attempts} attempt(s): {last_error}")


class LLMServerUnreachable(LLMRequestError):
    """Nothing listens at ``llm.base_url`` (connection refused): the message names the URL
    and the command that starts the server expected there."""

    def __init__(self, tag: str, attempts: int, last_error: str):
        self.tag, self.attempts, self.last_error = tag, attempts, last_error
        WizardcoderError.__init__(self, last_error)


class TooManyRequestErrors(WizardcoderError):
    """More requests failed than the caller allows (``max_errors``): sending stopped."""

    def __init__(self, step: str, counts: dict[str, int], max_errors: int, not_sent: int,
                 examples: Sequence[str]):
        self.step, self.counts, self.max_errors = step, dict(counts), max_errors
        self.not_sent, self.examples = not_sent, list(examples)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        super().__init__(
            f"{step}: {sum(self.counts.values())} request(s) failed ({shown}), more than the "
            f"{max_errors} allowed; {not_sent} request(s) not sent. First errors: "
            + "; ".join(self.examples))


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """Every request would fail the same way (401, 403, 404, ...)."""


class _Unreachable(_Fatal):
    """Connection refused where retrying cannot help (see ``LLMClient._attempt``)."""


class _Skipped(Exception):
    """Not attempted: sending stopped (a stage-wide failure, a crash, the budget, too many
    failed requests)."""


@dataclass
class _Run:
    """State shared by the workers of one ``achat_many`` call."""

    limiter: RateLimiter
    slots: asyncio.Semaphore
    bar: Any
    budget: Budget | None = None
    max_errors: int | None = None
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    fatal: list[LLMRequestError] = field(default_factory=list)
    crashes: list[BaseException] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # permanent failures, per class
    transient: int = 0  # requests that failed transiently through every retry
    examples: list[str] = field(default_factory=list)

    def count_error(self, tag: str, result: ChatResult) -> None:
        if result.error == TRANSIENT:  # retried by a rerun: no reason to stop the others
            self.transient += 1
            return
        self.errors[result.error] += 1
        if len(self.examples) < 20:  # each failed request named, up to 20
            self.examples.append(f"{tag or '<untagged>'!r}: {result.error}: "
                                 f"{result.error_message[:200]}")
        if self.max_errors is not None and sum(self.errors.values()) > self.max_errors:
            self.abort.set()  # requests in flight finish and are cached

    @property
    def too_many(self) -> bool:
        return self.max_errors is not None and sum(self.errors.values()) > self.max_errors


class LLMClient:
    """Sends :class:`ChatRequest` batches; see the module docstring for the policy.

    ``model_identity``: the cache identity of ``llm.model``, or a function from a model
    name to its identity (see :class:`~wizardcoder.llm.wire.Wire`). ``stats`` accumulates
    over calls: ``calls`` = HTTP attempts sent (retries included), ``cache_hits`` =
    requests answered without the network, ``request_errors`` = requests that failed for
    their row (sent now or replayed from the cache), tokens = as reported by the server for
    network answers only.
    """

    def __init__(self, config: LLMConfig, base_url: str, api_key: str | None,
                 model_identity: str | Callable[[str], str], cache: RequestCache,
                 server_command: str | None = None):
        self.config = config
        # the only holder of the key; ``server_command`` goes into a connection-refused error
        self.endpoint = Endpoint(config, base_url, api_key, server_command)
        # Whether the server has answered anything (any HTTP status) through this client:
        # from then on a refused connection to a remote server is a blip worth retrying.
        self.server_answered = False
        self.wire = Wire(config, model_identity)
        self.cache = cache
        self.stats: dict[str, int] = {"calls": 0, "cache_hits": 0, "retries": 0,
                                      "failures": 0, "request_errors": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0}

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    @property
    def model_identity(self) -> str:
        """The cache identity of ``llm.model`` (step models: ``wire.identity(name)``)."""
        return self.wire.identity()

    def __repr__(self) -> str:
        return (f"LLMClient(base_url={self.base_url!r}, model={self.config.model!r}, "
                f"model_identity={self.model_identity!r})")

    # -- public API ---------------------------------------------------------------------

    def estimate(self, requests: Sequence[ChatRequest]) -> dict[str, int]:
        """Dry run: what running ``requests`` would cost, without sending anything."""
        keys = {}
        for req in requests:
            keys.setdefault(self.wire.key(req), req)
        uncached = [r for k, r in keys.items() if self.cached(k) is None]
        return {"requests": len(requests), "unique": len(keys),
                "cached": len(keys) - len(uncached), "uncached_calls": len(uncached),
                "prompt_tokens_est": sum(r.estimated_prompt_tokens() for r in uncached),
                "max_completion_tokens": sum(r.max_tokens for r in uncached)}

    def chat_many(self, requests: Sequence[ChatRequest], desc: str = "llm",
                  progress: bool = True, budget: Budget | None = None,
                  max_errors: int | None = None) -> list[ChatResult]:
        """One result per request, same order: an answer or the request's own failure.

        A request that fails for its own reason (400 context length or bad request, a
        content filter, no content, retries exhausted) comes back with ``error`` set while
        the others carry on; permanent failures are cached like answers, so a rerun replays
        them without paying, and exhausted retries (class ``retries_exhausted``) are not, so
        a rerun tries again. Raises :class:`LLMRequestError` for a failure every request
        would share (401, 403, 404); :class:`TooManyRequestErrors` once more than
        ``max_errors`` requests failed permanently (exhausted retries do not count);
        :class:`BudgetExceeded` when ``budget`` refuses a request (cache hits are charged
        at their recorded usage; no request is sent whose worst case would pass the cap);
        and any other exception a worker hits (the cache cannot be written: disk full, a
        locked database), which stops new sends at once. In every case the requests in
        flight finish and are stored when possible, so a rerun resumes without repeats.
        """
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        if in_loop:
            raise RuntimeError("chat_many() called inside a running event loop; "
                               "await achat_many() instead")
        # Run outside the except block: errors must not chain to unrelated exceptions.
        return asyncio.run(self.achat_many(requests, desc=desc, progress=progress,
                                           budget=budget, max_errors=max_errors))

    async def achat_many(self, requests: Sequence[ChatRequest], desc: str = "llm",
                         progress: bool = True, budget: Budget | None = None,
                         max_errors: int | None = None) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        run = _Run(RateLimiter(self.config.requests_per_minute, self.config.tokens_per_minute),
                   asyncio.Semaphore(self.config.max_in_flight), None, budget, max_errors)
        pending = self._lookup(requests, results, run)
        # `pending` is THE list of requests to send (cache key -> indexes of the requests
        # asking it; duplicates within a batch cost one call). A transport that answers them
        # another way (e.g. a batch API) stores its answers in the cache and looks up again.
        if pending and self.config.mode == "batch" and not run.too_many:
            pending = await self._batch(requests, results, run, pending, desc, progress)
        if run.too_many:  # failures replayed (or batched) already pass the limit: send nothing
            raise TooManyRequestErrors(desc, run.errors, max_errors, len(pending),
                                       run.examples)
        run.bar = tqdm(total=len(requests), desc=desc, unit="req", disable=not progress,
                       mininterval=1.0, dynamic_ncols=True)
        run.bar.update(sum(r is not None for r in results))
        self._postfix(run)
        outcomes: list = []
        try:
            if pending:  # all cached: not even a session, let alone a connection
                async with self.endpoint.session() as session:
                    outcomes = await asyncio.gather(
                        *(self._worker(session, run, requests[idx[0]], key, len(idx))
                          for key, idx in pending.items()), return_exceptions=True)
        finally:
            run.bar.close()
        for idx, outcome in zip(pending.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                continue
            results[idx[0]] = outcome
            for dup in idx[1:]:
                self.stats["cache_hits"] += 1
                results[dup] = dataclasses.replace(outcome, cached=True, attempts=0)
        not_sent = sum(isinstance(o, _Skipped) for o in outcomes)
        if run.crashes:
            raise self._crash_report(run.crashes[0], desc, not_sent)
        if run.fatal:
            first = run.fatal[0]
            if not_sent:
                first.args = (f"{first.args[0]} ({not_sent} other request(s) not sent; "
                              "finished answers are cached, rerun to resume)",)
            raise first
        if run.too_many:
            raise TooManyRequestErrors(desc, run.errors, max_errors, not_sent, run.examples)
        if budget is not None and budget.stopped:
            left = [requests[idx[0]] for idx in pending.values() if results[idx[0]] is None]
            worst = sum(budget.worst_case(r.estimated_prompt_tokens(), r.max_tokens)
                        for r in left)
            raise BudgetExceeded(budget, desc, sum(r is None for r in results), worst)
        return results  # type: ignore[return-value]

    def cancel_batches(self) -> list[tuple[str, str]]:
        """``llm.mode: batch``: cancel every batch submitted through this cache and not yet
        collected; (batch id, status) of each. A rerun keeps what they answered."""
        return asyncio.run(cancel_unfinished(self.endpoint, self.cache.path))

    def cached(self, key: str) -> CachedResponse | None:
        """What this client takes from the cache for ``key`` instead of sending it."""
        return self.cache.lookup(key, resend_errors=self.config.resend_cached_errors)

    # -- internals ------------------------------------------------------------------------

    def _lookup(self, requests: Sequence[ChatRequest], results: list, run: _Run
                ) -> dict[str, list[int]]:
        """Fill ``results`` from the cache; return the requests to send, by key."""
        pending: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            if results[i] is not None:
                continue
            key = self.wire.key(req)
            if key in pending:
                pending[key].append(i)
                continue
            hit = self.cached(key)
            if hit is None:
                pending[key] = [i]
                continue
            self.stats["cache_hits"] += 1
            results[i] = ChatResult.from_cache(hit, cached=True)
            if hit.error is not None:
                self.stats["request_errors"] += 1
                run.count_error(req.tag, results[i])
            if run.budget is not None:
                run.budget.charge_cached(hit.prompt_tokens or 0, hit.completion_tokens or 0)
        return pending

    async def _batch(self, requests: Sequence[ChatRequest], results: list, run: _Run,
                     pending: dict[str, list[int]], desc: str, progress: bool
                     ) -> dict[str, list[int]]:
        """``llm.mode: batch``: the Batch API answers ``pending`` into the cache first
        (:mod:`wizardcoder.llm.batch`). Its answers count as sent (paid in this run); a
        request still unanswered after its follow-up batches (a 429/5xx line, an expired
        batch, ``llm.batch_retries``) fails as retries_exhausted without an online send,
        uncached, so a rerun puts it in a new batch. Returns what is left to send online
        (requests the budget kept out)."""
        outcome = await prefetch(self.endpoint, self.wire, self.cache,
                                 {key: requests[idx[0]] for key, idx in pending.items()},
                                 desc=desc, progress=progress, budget=run.budget)
        left: dict[str, list[int]] = {}
        for key, idx in pending.items():
            hit = self.cache.get(key) if key in outcome.answered else None
            if hit is not None:
                first = ChatResult.from_cache(hit, cached=False, attempts=1)
                self.stats["prompt_tokens"] += first.prompt_tokens
                self.stats["completion_tokens"] += first.completion_tokens
                if run.budget is not None:  # paid now (batch.py released its reservation)
                    run.budget.settle(0.0, first.prompt_tokens, first.completion_tokens)
            elif key in outcome.transient:
                first = ChatResult("", None, 0, 0, None, False, 1, TRANSIENT,
                                   outcome.transient[key])
            else:
                left[key] = idx
                continue
            results[idx[0]] = first
            for dup in idx[1:]:
                self.stats["cache_hits"] += 1
                results[dup] = dataclasses.replace(first, cached=True, attempts=0)
            if first.error is not None:
                self.stats["request_errors"] += 1
                run.count_error(requests[idx[0]].tag, first)
        return left

    def _crash_report(self, exc: BaseException, desc: str, not_sent: int) -> BaseException:
        note = (f"{desc}: sending stopped at once: {not_sent} request(s) not sent; every "
                f"answer stored before is in the request cache, rerun to resume")
        if isinstance(exc, WizardcoderError) and exc.args:
            exc.args = (f"{exc.args[0]} ({note})",)
        else:  # a bug: keep its type and traceback, say what happened to the batch
            log.error("%s", note)
        return exc

    def _postfix(self, run: _Run) -> None:
        run.bar.set_postfix_str(f"cached={self.stats['cache_hits']} "
                                f"retries={self.stats['retries']} "
                                f"failed={self.stats['request_errors']}", refresh=False)

    async def _worker(self, session, run: _Run, req: ChatRequest, key: str,
                      weight: int) -> ChatResult:
        try:
            result = await self._send(session, run, req, key)
        except (_Skipped, LLMRequestError):
            raise
        except BaseException as exc:
            # Not an API failure (the cache cannot be written: disk full, a locked database;
            # a bug): stop sending at once; requests in flight finish and are stored if
            # possible, and the caller raises this.
            run.abort.set()
            run.crashes.append(exc)
            raise
        run.bar.update(weight)  # duplicates of this request are done too
        if result.error is not None:
            self.stats["request_errors"] += 1
            run.count_error(req.tag, result)
            self._postfix(run)
            log.info("LLM request %r failed for its row: %s: %s", req.tag, result.error,
                     result.error_message)
        return result

    async def _send(self, session, run: _Run, req: ChatRequest, key: str) -> ChatResult:
        cfg = self.config
        cost = req.estimated_prompt_tokens() + req.max_tokens
        attempts = 0
        reserved: float | None = None
        while True:
            async with run.slots:
                await run.limiter.acquire(cost)
                if run.abort.is_set():
                    raise _Skipped  # start nothing new
                if reserved is None and run.budget is not None:
                    reserved = run.budget.worst_case(req.estimated_prompt_tokens(),
                                                     req.max_tokens)
                    if not run.budget.reserve(reserved):
                        run.abort.set()  # requests in flight finish and are cached
                        raise _Skipped
                attempts += 1
                self.stats["calls"] += 1
                fatal = False
                try:
                    result = await self._attempt(session, req, key, attempts)
                except _Retryable as exc:
                    error, retry_after = self.endpoint.redact(str(exc)), exc.retry_after
                except _Fatal as exc:
                    error, fatal = self.endpoint.redact(str(exc)), exc
                else:
                    if run.budget is not None:
                        run.budget.settle(reserved or 0.0, result.prompt_tokens,
                                          result.completion_tokens)
                    return result
            # Raised outside the except blocks so the error carries no __context__ chain
            # back to the HTTP exception, whose request object holds the auth header.
            if fatal or attempts > cfg.max_retries:
                if run.budget is not None and reserved is not None:
                    run.budget.release(reserved)
                if fatal:
                    raise self._fail(run, req, attempts, error,
                                     isinstance(fatal, _Unreachable))
                # Transient: not cached, so a rerun tries this request again.
                return ChatResult("", None, 0, 0, None, False, attempts, TRANSIENT,
                                  f"failed after {attempts} attempt(s) (max_retries "
                                  f"exhausted); last error: {error}")
            if retry_after is not None:
                delay = min(retry_after, RETRY_AFTER_CAP_S) * (1 + 0.1 * random.random())
                run.limiter.pause(delay)  # everyone backs off, not just this worker
            else:
                ceiling = min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** (attempts - 1))
                delay = random.uniform(0, ceiling)
            self.stats["retries"] += 1
            self._postfix(run)
            log.info("LLM request %r attempt %d failed (%s); retrying in %.2f s",
                     req.tag, attempts, error, delay)
            await asyncio.sleep(delay)

    def _fail(self, run: _Run, req: ChatRequest, attempts: int, error: str,
              unreachable: bool = False) -> LLMRequestError:
        self.stats["failures"] += 1
        self._postfix(run)
        exc = (LLMServerUnreachable if unreachable else LLMRequestError)(req.tag, attempts, error)
        if not run.fatal:  # the requests in flight beside it fail alike: say it once
            log.warning("%s", exc)
        run.fatal.append(exc)
        run.abort.set()
        return exc

    async def _attempt(self, session, req: ChatRequest, key: str, attempt: int) -> ChatResult:
        import aiohttp

        body = json.dumps(self.wire.body(req), ensure_ascii=False).encode("utf-8")
        try:
            async with session.post(f"{self.base_url}/chat/completions", data=body,
                                    params=self.config.query_params or None,
                                    allow_redirects=False) as resp:
                status, headers = resp.status, resp.headers
                text = (await resp.read()).decode("utf-8", "replace")
        except TimeoutError:  # aiohttp's timeouts are TimeoutError subclasses
            raise _Retryable(f"timed out after {self.config.timeout_s} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            # Refused: nothing listens there. Retrying only helps a remote server that has
            # answered before (restarting); a local one, or one never reached, is not there.
            if is_connection_refused(exc) and not (
                    self.server_answered and not is_loopback(self.base_url)):
                raise _Unreachable(self.endpoint.unreachable()) from None
            raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from None
        self.server_answered = True
        if not 200 <= status < 300:
            kind, error_class = classify_http_error(status, text)
            message = f"HTTP {status}: {error_message(text)}"
            if kind == "retry":
                raise _Retryable(message, parse_retry_after(headers))
            if kind == "stage":
                raise _Fatal(message)
            answer = Completion("", None, 0, 0, None, error_class, message)
        else:
            try:
                answer = parse_completion(text)
            except MalformedResponse as exc:
                raise _Retryable(str(exc)) from None
        return await self._store(req, key, attempt, answer)

    async def _store(self, req: ChatRequest, key: str, attempt: int,
                     answer: Completion) -> ChatResult:
        """Commit an answer or a permanent failure before anyone can use it: a crash from
        here on loses nothing paid. In a thread: the fsync must not stall the other
        requests on this event loop."""
        message = self.endpoint.redact(answer.error_message)
        await asyncio.to_thread(
            self.cache.put, key, model_identity=self.wire.identity(self.wire.model(req)),
            request=self.wire.body(req), text=answer.text if answer.error is None else message,
            finish_reason=answer.finish_reason, prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens, model=answer.model, error=answer.error)
        self.stats["prompt_tokens"] += answer.prompt_tokens
        self.stats["completion_tokens"] += answer.completion_tokens
        return ChatResult(answer.text, answer.finish_reason, answer.prompt_tokens,
                          answer.completion_tokens, answer.model, False, attempt,
                          answer.error, message)
