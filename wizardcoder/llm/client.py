"""Concurrent, rate-limited, retrying and cached chat completions against any OpenAI-compatible API.

Evolution sends thousands of independent requests; doing that well is the difference between
a stage that finishes overnight and one that burns money. The policy lives here, in one place:
a bounded number of requests in flight, client-side RPM/TPM pacing, Retry-After honoured on
429 (and shared by all workers so they back off together), full-jitter exponential backoff
for transient failures, and a hard error naming the request once retries are exhausted --
never a silent empty answer that would end up as training data. The openai package's own
retries are disabled so this policy is the only one. Every answer is committed to the
:class:`RequestCache` before it is returned, so a killed stage loses nothing it paid for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from wizardcoder.errors import WizardcoderError
from wizardcoder.llm.cache import RequestCache, request_key
from wizardcoder.llm.config import LLMConfig

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


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    headers = headers or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers.get(name)) * scale)
        except (TypeError, ValueError):
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimiter:
    """Token buckets for requests and tokens per minute, plus a shared pause after a 429.

    Buckets hold ten seconds' worth so a fresh run does not burst a whole minute's quota
    (providers enforce limits on sub-minute windows). A request may take the token bucket
    below zero, so long-run throughput is exact even for requests larger than the bucket.
    """

    def __init__(self, requests_per_minute: int, tokens_per_minute: int):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self._req_cap = max(1.0, self.rpm / 6)
        self._tok_cap = max(1.0, self.tpm / 6)
        self._req, self._tok = self._req_cap, self._tok_cap
        self._last = time.monotonic()
        self._pause_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def _refill(self, now: float) -> None:
        elapsed, self._last = now - self._last, now
        if self.rpm:
            self._req = min(self._req_cap, self._req + elapsed * self.rpm / 60)
        if self.tpm:
            self._tok = min(self._tok_cap, self._tok + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int) -> None:
        async with self._lock:  # FIFO-ish: one waiter at a time computes its turn
            while True:
                now = time.monotonic()
                self._refill(now)
                wait = self._pause_until - now
                if self.rpm and self._req < 1:
                    wait = max(wait, (1 - self._req) * 60 / self.rpm)
                need = min(tokens, self._tok_cap)
                if self.tpm and self._tok < need:
                    wait = max(wait, (need - self._tok) * 60 / self.tpm)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.rpm:
                self._req -= 1
            if self.tpm:
                self._tok -= tokens


@dataclass
class _Run:
    """State shared by the workers of one ``achat_many`` call."""

    limiter: RateLimiter
    slots: asyncio.Semaphore
    bar: Any
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
                  progress: bool = True) -> list[ChatResult]:
        """Answer all requests (same order) or raise :class:`LLMRequestError`."""
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        if in_loop:
            raise RuntimeError("chat_many() called inside a running event loop; "
                               "await achat_many() instead")
        # Run outside the except block: errors must not chain to unrelated exceptions.
        return asyncio.run(self.achat_many(requests, desc=desc, progress=progress))

    async def achat_many(self, requests: Sequence[ChatRequest], desc: str = "llm",
                         progress: bool = True) -> list[ChatResult]:
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
        bar = tqdm(total=len(requests), desc=desc, unit="req", disable=not progress,
                   mininterval=1.0, dynamic_ncols=True)
        bar.update(sum(r is not None for r in results))
        run = _Run(RateLimiter(self.config.requests_per_minute, self.config.tokens_per_minute),
                   asyncio.Semaphore(self.config.max_in_flight), bar)
        self._postfix(run)
        outcomes: list = []
        try:
            if pending:  # all cached: not even a client object, let alone a connection
                api = self._make_api()
                try:
                    outcomes = await asyncio.gather(
                        *(self._worker(api, run, requests[idx[0]], key, len(idx))
                          for key, idx in pending.items()), return_exceptions=True)
                finally:
                    await api.close()
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
        return results  # type: ignore[return-value]

    # -- internals ------------------------------------------------------------------------

    def _make_api(self):
        import openai  # imported lazily: config validation and dry runs do not need it

        host = urlsplit(self.base_url).hostname
        kwargs: dict[str, Any] = {}
        if host in _LOOPBACK:
            # A proxy from the environment must never see loopback traffic (or break it).
            http_cls = getattr(openai, "DefaultAsyncHttpxClient", None)
            if http_cls is not None:
                kwargs["http_client"] = http_cls(trust_env=False)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.__api_key or "no-key",
                                  max_retries=0, timeout=self.config.timeout_s, **kwargs)

    def _postfix(self, run: _Run) -> None:
        run.bar.set_postfix_str(f"cached={self.stats['cache_hits']} "
                                f"retries={self.stats['retries']} "
                                f"failed={self.stats['failures']}", refresh=False)

    async def _worker(self, api, run: _Run, req: ChatRequest, key: str,
                      weight: int) -> ChatResult:
        cfg = self.config
        cost = req.estimated_prompt_tokens() + req.max_tokens
        attempts = 0
        while True:
            async with run.slots:
                await run.limiter.acquire(cost)
                if run.abort.is_set():
                    raise _Skipped  # another request failed for good: start nothing new
                attempts += 1
                self.stats["calls"] += 1
                fatal = False
                try:
                    result = await self._attempt(api, req, key, attempts)
                except _Retryable as exc:
                    error, retry_after = self.redact(str(exc)), exc.retry_after
                except _Fatal as exc:
                    error, fatal = self.redact(str(exc)), True
                else:
                    run.bar.update(weight)  # duplicates of this request are done too
                    return result
            # Raised outside the except blocks so the error carries no __context__ chain
            # back to the openai exception, whose request object holds the auth header.
            if fatal or attempts > cfg.max_retries:
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

    async def _attempt(self, api, req: ChatRequest, key: str, attempt: int) -> ChatResult:
        import openai

        try:
            raw = await api.chat.completions.with_raw_response.create(
                model=self.config.model, messages=list(req.messages), **req.sampling())
        except openai.APIStatusError as exc:
            code = exc.status_code
            msg = f"HTTP {code}: " + re.sub(r"^Error code: \d+ - ", "", str(exc.message))
            if code == 429 or code >= 500 or code in (408, 409, 425):
                raise _Retryable(msg, parse_retry_after(exc.response.headers)) from None
            raise _Fatal(msg) from None
        except openai.APITimeoutError:
            raise _Retryable(f"timed out after {self.config.timeout_s} s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise _Retryable(f"connection error: {type(cause).__name__}: {cause}") from None
        body = raw.http_response.text
        text, finish, usage, model = _parse_completion(body)
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        # Commit before anyone can use the answer: a crash from here on loses nothing paid.
        self.cache.put(key, model_identity=self.model_identity,
                       request={"messages": list(req.messages), **req.sampling()},
                       text=text, finish_reason=finish, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens, model=model)
        self.stats["prompt_tokens"] += prompt_tokens
        self.stats["completion_tokens"] += completion_tokens
        return ChatResult(text, finish, prompt_tokens, completion_tokens, model, False, attempt)


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
