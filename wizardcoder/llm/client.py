"""Concurrent, rate-limited, retrying and cached chat completions against any OpenAI-compatible API.

Evolution sends thousands of independent requests; doing that well is the difference between
a stage that finishes overnight and one that burns money. The policy lives here, in one place:
a bounded number of requests in flight, client-side RPM/TPM pacing, Retry-After honoured on
429 (and shared by all workers so they back off together), full-jitter exponential backoff
for transient failures, an optional spending cap (:class:`~wizardcoder.llm.limits.Budget`),
and a hard error naming the request once retries are exhausted -- never a silent empty
answer that would end up as training data. Every answer is committed to the
:class:`RequestCache` before it is returned, so a killed stage loses nothing it paid for.

Requests go over aiohttp straight to ``{base_url}/chat/completions`` (the wire format is one
small JSON object each way, parsed strictly here). The openai SDK was the transport before:
its request transformation and HTTP stack cost ~2 ms of CPU per request, which held 32
requests in flight to ~0.7x of the ideal rate against a 200 ms server; aiohttp costs ~0.2 ms
(``python bench/evolve.py`` measures both). The cache commit (an fsync) runs in a worker
thread so it never stalls the event loop that the other requests share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from wizardcoder.errors import WizardcoderError
from wizardcoder.llm.cache import RequestCache, request_key
from wizardcoder.llm.config import LLMConfig
from wizardcoder.llm.limits import (  # noqa: F401  (re-exported: the public names live here)
    Budget,
    BudgetExceeded,
    Prices,
    RateLimiter,
    parse_retry_after,
)

log = logging.getLogger(__name__)

_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Servers sometimes echo part of a key in errors ("Incorrect API key provided: sk-...abcd").
_KEYISH = re.compile(r"\b(?:sk|sess|hf|ghp|gsk|xai|rk|pk)[-_][A-Za-z0-9*_\-]{6,}")
RETRY_AFTER_CAP_S = 3600.0


class LLMRequestError(WizardcoderError):
    """A request failed for good: retries exhausted or a non-retryable error (400, 401, ...)."""

    def __init__(self, tag: str, attempts: int, last_error: str, *, retryable: bool = True):
        self.tag, self.attempts, self.last_error = tag, attempts, last_error
        why = (f"failed after {attempts} attempt(s) (max_retries exhausted)" if retryable
               else f"failed with a non-retryable error after {attempts} attempt(s)")
        super().__init__(f"LLM request {tag or '<untagged>'!r} {why}; last error: {last_error}")


@dataclass(frozen=True, eq=False)
class ChatRequest:
    """One chat completion. ``max_tokens`` is required: an unbounded answer is unbounded cost."""

    messages: Sequence[dict]
    max_tokens: int
    temperature: float | None = 0.0
    top_p: float | None = 1.0
    seed: int | None = None
    stop: Sequence[str] | None = None
    tag: str = ""  # for progress and errors only; not part of the cache key

    def __post_init__(self) -> None:
        if not self.messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in self.messages):
            raise ValueError(f"ChatRequest {self.tag!r}: messages must be a non-empty list of "
                             "{'role': ..., 'content': ...} dicts")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) \
                or self.max_tokens < 1:
            raise ValueError(f"ChatRequest {self.tag!r}: max_tokens must be an int >= 1, "
                             f"got {self.max_tokens!r}")

    def key(self, model_identity: str) -> str:
        return request_key(model_identity, self.messages, max_tokens=self.max_tokens,
                           temperature=self.temperature, top_p=self.top_p, seed=self.seed,
                           stop=self.stop)

    def sampling(self) -> dict[str, Any]:
        """The body parameters that go on the wire (None means 'server default')."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        params = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                  "top_p": self.top_p, "seed": self.seed, "stop": stop and list(stop)}
        return {k: v for k, v in params.items() if v is not None}

    def estimated_prompt_tokens(self) -> int:
        return sum(len(str(m.get("content", ""))) for m in self.messages) // 4 + 1


@dataclass(frozen=True)
class ChatResult:
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str | None
    cached: bool
    attempts: int  # network attempts made for this result in this run; 0 when cached


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """Retrying cannot help (400, 401, 404, ...)."""


class _Skipped(Exception):
    """Not attempted because another request already failed for good."""


@dataclass
class _Run:
    """State shared by the workers of one ``achat_many`` call."""

    limiter: RateLimiter
    slots: asyncio.Semaphore
    bar: Any
    budget: Budget | None = None
    abort: asyncio.Event = field(default_factory=asyncio.Event)
    failures: list[LLMRequestError] = field(default_factory=list)


class LLMClient:
    """Sends :class:`ChatRequest` batches; see the module docstring for the policy.

    ``stats`` accumulates over calls: ``calls`` = HTTP attempts sent (retries included),
    ``cache_hits`` = requests answered without the network, tokens = as reported by the
    server for network answers only.
    """

    def __init__(self, config: LLMConfig, base_url: str, api_key: str | None,
                 model_identity: str, cache: RequestCache):
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.model_identity = model_identity
        self.cache = cache
        self.__api_key = api_key or ""  # name-mangled and never in repr, logs or errors
        self.stats: dict[str, int] = {"calls": 0, "cache_hits": 0, "retries": 0,
                                      "failures": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0}

    def __repr__(self) -> str:
        return (f"LLMClient(base_url={self.base_url!r}, model={self.config.model!r}, "
                f"model_identity={self.model_identity!r})")

    def redact(self, text: str) -> str:
        """Remove the key (and anything shaped like one) from text meant for humans."""
        if self.__api_key and len(self.__api_key) >= 4:
            text = text.replace(self.__api_key, "[redacted]")
        return _KEYISH.sub("[redacted]", text)

    # -- public API ---------------------------------------------------------------------

    def estimate(self, requests: Sequence[ChatRequest]) -> dict[str, int]:
        """Dry run: what running ``requests`` would cost, without sending anything."""
        keys = {}
        for req in requests:
            keys.setdefault(req.key(self.model_identity), req)
        uncached = [r for k, r in keys.items() if self.cache.get(k) is None]
        return {"requests": len(requests), "unique": len(keys),
                "cached": len(keys) - len(uncached), "uncached_calls": len(uncached),
                "prompt_tokens_est": sum(r.estimated_prompt_tokens() for r in uncached),
                "max_completion_tokens": sum(r.max_tokens for r in uncached)}

    def chat_many(self, requests: Sequence[ChatRequest], desc: str = "llm",
                  progress: bool = True, budget: Budget | None = None) -> list[ChatResult]:
        """Answer all requests (same order) or raise :class:`LLMRequestError`.

        With a ``budget``, cache hits are charged at their recorded usage and no request is
        sent whose worst case would take spending past the cap; then, once the requests in
        flight are answered and cached, :class:`BudgetExceeded` is raised.
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
                                           budget=budget))

    async def achat_many(self, requests: Sequence[ChatRequest], desc: str = "llm",
                         progress: bool = True, budget: Budget | None = None
                         ) -> list[ChatResult]:
        results: list[ChatResult | None] = [None] * len(requests)
        pending: dict[str, list[int]] = {}  # duplicates within a batch cost one call
        for i, req in enumerate(requests):
            key = req.key(self.model_identity)
            if key in pending:
                pending[key].append(i)
                continue
            hit = self.cache.get(key)
            if hit is None:
                pending[key] = [i]
            else:
                self.stats["cache_hits"] += 1
                results[i] = ChatResult(hit.text, hit.finish_reason, hit.prompt_tokens or 0,
                                        hit.completion_tokens or 0, hit.model, True, 0)
                if budget is not None:
                    budget.charge_cached(hit.prompt_tokens or 0, hit.completion_tokens or 0)
        bar = tqdm(total=len(requests), desc=desc, unit="req", disable=not progress,
                   mininterval=1.0, dynamic_ncols=True)
        bar.update(sum(r is not None for r in results))
        run = _Run(RateLimiter(self.config.requests_per_minute, self.config.tokens_per_minute),
                   asyncio.Semaphore(self.config.max_in_flight), bar, budget)
        self._postfix(run)
        outcomes: list = []
        try:
            if pending:  # all cached: not even a session, let alone a connection
                async with self._session() as session:
                    outcomes = await asyncio.gather(
                        *(self._worker(session, run, requests[idx[0]], key, len(idx))
                          for key, idx in pending.items()), return_exceptions=True)
        finally:
            bar.close()
        for idx, outcome in zip(pending.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, (LLMRequestError, _Skipped)):
                    raise outcome  # a bug, not an API failure: keep its traceback
                continue
            results[idx[0]] = outcome
            for dup in idx[1:]:
                self.stats["cache_hits"] += 1
                results[dup] = dataclasses.replace(outcome, cached=True, attempts=0)
        if run.failures:
            first = run.failures[0]
            undone = sum(r is None for r in results)
            if undone > 1:
                first.args = (f"{first.args[0]} ({undone - 1} other request(s) not answered; "
                              "finished answers are cached, rerun to resume)",)
            raise first
        if budget is not None and budget.stopped:
            left = [requests[idx[0]] for idx in pending.values() if results[idx[0]] is None]
            worst = sum(budget.worst_case(r.estimated_prompt_tokens(), r.max_tokens)
                        for r in left)
            raise BudgetExceeded(budget, desc, sum(r is None for r in results), worst)
        return results  # type: ignore[return-value]

    # -- internals ------------------------------------------------------------------------

    def _session(self):
        import aiohttp  # imported lazily: config validation and dry runs do not need it

        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "wizardcoder-llm-client"}
        if self.__api_key:
            headers["Authorization"] = f"Bearer {self.__api_key}"
        # The semaphore bounds requests in flight; the connector must not bound them lower
        # (aiohttp's default is 100 connections).
        connector = aiohttp.TCPConnector(limit=self.config.max_in_flight, limit_per_host=0)
        # A proxy from the environment must never see loopback traffic (or break it); remote
        # endpoints honour HTTPS_PROXY like the openai SDK does.
        loopback = urlsplit(self.base_url).hostname in _LOOPBACK
        return aiohttp.ClientSession(
            headers=headers, connector=connector, trust_env=not loopback,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))

    def _postfix(self, run: _Run) -> None:
        run.bar.set_postfix_str(f"cached={self.stats['cache_hits']} "
                                f"retries={self.stats['retries']} "
                                f"failed={self.stats['failures']}", refresh=False)

    async def _worker(self, session, run: _Run, req: ChatRequest, key: str,
                      weight: int) -> ChatResult:
        cfg = self.config
        cost = req.estimated_prompt_tokens() + req.max_tokens
        attempts = 0
        reserved: float | None = None
        while True:
            async with run.slots:
                await run.limiter.acquire(cost)
                if run.abort.is_set():
                    raise _Skipped  # a failure or the budget: start nothing new
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
                    error, retry_after = self.redact(str(exc)), exc.retry_after
                except _Fatal as exc:
                    error, fatal = self.redact(str(exc)), True
                else:
                    if run.budget is not None:
                        run.budget.settle(reserved or 0.0, result.prompt_tokens,
                                          result.completion_tokens)
                    run.bar.update(weight)  # duplicates of this request are done too
                    return result
            # Raised outside the except blocks so the error carries no __context__ chain
            # back to the HTTP exception, whose request object holds the auth header.
            if fatal or attempts > cfg.max_retries:
                if run.budget is not None and reserved is not None:
                    run.budget.release(reserved)
                raise self._fail(run, req, attempts, error, not fatal)
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
              retryable: bool) -> LLMRequestError:
        self.stats["failures"] += 1
        self._postfix(run)
        exc = LLMRequestError(req.tag, attempts, error, retryable=retryable)
        run.failures.append(exc)
        run.abort.set()
        log.warning("%s", exc)
        return exc

    async def _attempt(self, session, req: ChatRequest, key: str, attempt: int) -> ChatResult:
        import aiohttp

        body = json.dumps({"model": self.config.model, "messages": list(req.messages),
                           **req.sampling()}, ensure_ascii=False).encode("utf-8")
        try:
            async with session.post(f"{self.base_url}/chat/completions", data=body,
                                    allow_redirects=False) as resp:
                status, headers = resp.status, resp.headers
                text = (await resp.read()).decode("utf-8", "replace")
        except TimeoutError:  # aiohttp's timeouts are TimeoutError subclasses
            raise _Retryable(f"timed out after {self.config.timeout_s} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from None
        if not 200 <= status < 300:
            msg = f"HTTP {status}: {_error_message(text)}"
            if status == 429 or status >= 500 or status in (408, 409, 425):
                raise _Retryable(msg, parse_retry_after(headers))
            raise _Fatal(msg)
        text, finish, usage, model = _parse_completion(text)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        # Commit before anyone can use the answer: a crash from here on loses nothing paid.
        # In a thread: the fsync must not stall the other requests on this event loop.
        await asyncio.to_thread(
            self.cache.put, key, model_identity=self.model_identity,
            request={"messages": list(req.messages), **req.sampling()}, text=text,
            finish_reason=finish, prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens, model=model)
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += completion_tokens
        return ChatResult(text, finish, prompt_tokens, completion_tokens, model, False, attempt)


def _error_message(body: str) -> str:
    """The human part of an error body (OpenAI's {"error": {"message": ...}} or plain text)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or error
        else:
            message = error
        return str(message)[:500]
    return body.strip().replace("\n", " ")[:300] or "(empty body)"


def _parse_completion(body: str) -> tuple[str, str | None, dict, str | None]:
    """Strictly read a chat.completion body; anything odd is a retryable malformed answer."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        snippet = body[:120].replace("\n", " ")
        raise _Retryable(f"malformed response ({type(exc).__name__}): {snippet!r}") from None
    if not isinstance(text, str):
        raise _Retryable(f"malformed response: message content is {type(text).__name__}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return text, choice.get("finish_reason"), usage, data.get("model")
