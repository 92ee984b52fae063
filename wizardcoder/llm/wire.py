"""What goes over the wire for a chat request, what comes back, and which failures are whose.

One module owns the request/response format so that every path that talks to a server (the
concurrent client, and any batch submission) builds identical bodies and identical cache
keys, and reads answers and errors the same way:

- :class:`ChatRequest` (what a stage asks) and :class:`ChatResult` (an answer, or a per-row
  failure with its class from :data:`~wizardcoder.llm.cache.ERROR_CLASSES`);
- :class:`Wire`: the body actually sent for a request under the ``llm`` settings (model per
  request, token-limit parameter name, fixed-temperature models) and its cache key, which
  is derived from that body, so a setting that changes what is sent also changes the key;
- :func:`classify_http_error` and :func:`parse_completion`: a failure is *transient* (429,
  5xx, timeouts: retried, never cached), *the row's* (400 context length, a content filter,
  another bad request, no content: cached as that row's verdict) or *the stage's* (401, 403,
  404: every row would fail the same way, so the stage stops).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wizardcoder.llm.cache import CachedResponse, request_key
from wizardcoder.llm.config import LLMConfig

# Statuses that concern one request (its size or content); any other 4xx concerns all.
ROW_STATUSES = (400, 413, 422)
RETRY_STATUSES = (408, 409, 425, 429)
_CONTEXT_MARKERS = ("context_length", "context length", "maximum context", "context window",
                    "exceeds the available context", "prompt is too long", "too many tokens",
                    "reduce the length")
_FILTER_MARKERS = ("content_filter", "content filter", "content_policy", "content policy",
                   "content management policy", "responsibleaipolicyviolation")


@dataclass(frozen=True, eq=False)
class ChatRequest:
    """One chat completion. ``max_tokens`` is required: an unbounded answer is unbounded cost.

    ``model``: the model to ask; None = ``llm.model``."""

    messages: Sequence[dict]
    max_tokens: int
    temperature: float | None = 0.0
    top_p: float | None = 1.0
    seed: int | None = None
    stop: Sequence[str] | None = None
    tag: str = ""  # for progress and errors only; not part of the cache key
    model: str | None = None

    def __post_init__(self) -> None:
        if not self.messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in self.messages):
            raise ValueError(f"ChatRequest {self.tag!r}: messages must be a non-empty list of "
                             "{'role': ..., 'content': ...} dicts")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) \
                or self.max_tokens < 1:
            raise ValueError(f"ChatRequest {self.tag!r}: max_tokens must be an int >= 1, "
                             f"got {self.max_tokens!r}")
        if self.model is not None and not (isinstance(self.model, str) and self.model.strip()):
            raise ValueError(f"ChatRequest {self.tag!r}: model must be None or a model name")

    def estimated_prompt_tokens(self) -> int:
        return estimate_prompt_tokens(self.messages)


def estimate_prompt_tokens(messages: Sequence[dict]) -> int:
    """Prompt tokens of ``messages`` as providers meter them for rate limits: chars/4 + 1
    (the rate limiter, the budget and dry runs all count this way)."""
    return sum(len(str(m.get("content", ""))) for m in messages) // 4 + 1


@dataclass(frozen=True)
class ChatResult:
    """An answer, or (``error`` set) the request's own failure: the row it belongs to is
    eliminated with verdict ``request_error`` while the other requests carry on."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str | None  # as the server reported it in the completion (not the alias asked)
    cached: bool
    attempts: int  # network attempts made for this result in this run; 0 when cached
    error: str | None = None  # one of cache.ERROR_CLASSES; None for an answer
    error_message: str = ""  # the server's message (keys redacted)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_cache(cls, hit: CachedResponse, *, cached: bool, attempts: int = 0) -> ChatResult:
        """The result a cached answer, or cached permanent failure, stands for."""
        failed = hit.error is not None
        return cls("" if failed else hit.text, hit.finish_reason, hit.prompt_tokens or 0,
                   hit.completion_tokens or 0, hit.model, cached, attempts, hit.error,
                   hit.text if failed else "")


class Wire:
    """Bodies and cache keys of requests to one endpoint under one ``llm`` config.

    ``identity``: the cache identity of ``config.model``, or a function from a model name to
    its identity (needed when requests name other models, see ``llm.step_models``). A fixed
    identity string gives another model ``'<identity>#<model>'``.
    """

    def __init__(self, config: LLMConfig, identity: str | Callable[[str], str]):
        self.config = config
        self._identity = identity

    def model(self, req: ChatRequest) -> str:
        return req.model or self.config.model

    def identity(self, model: str | None = None) -> str:
        model = model or self.config.model
        if callable(self._identity):
            return self._identity(model)
        return self._identity if model == self.config.model else f"{self._identity}#{model}"

    def params(self, req: ChatRequest) -> dict[str, Any]:
        """The body parameters besides model and messages (None = server default: not sent)."""
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        fixed = self.config.fixed_temperature
        params = {self.config.token_limit_param: req.max_tokens,
                  "temperature": None if fixed else req.temperature,
                  "top_p": None if fixed else req.top_p,
                  "seed": req.seed, "stop": stop and list(stop)}
        return {k: v for k, v in params.items() if v is not None}

    def body(self, req: ChatRequest) -> dict[str, Any]:
        return {"model": self.model(req), "messages": list(req.messages), **self.params(req)}

    def key(self, req: ChatRequest) -> str:
        """The cache key of what is sent: the asked model's identity (for the embedded server
        its GGUF's content and context size, see ``server.model_identity_for_gguf``; for an
        endpoint its URL), messages, sampling as sent (a fixed-temperature model is asked at
        its default) and non-default options (token-limit parameter name, query parameters
        such as Azure's api-version). Not the port, concurrency, retries or prices."""
        fixed = self.config.fixed_temperature
        options = {}
        if self.config.token_limit_param != "max_tokens":
            options["token_limit_param"] = self.config.token_limit_param
        if self.config.query_params:  # e.g. Azure's api-version: another API, other answers
            options["query_params"] = dict(sorted(self.config.query_params.items()))
        return request_key(self.identity(self.model(req)), req.messages,
                           max_tokens=req.max_tokens,
                           temperature=None if fixed else req.temperature,
                           top_p=None if fixed else req.top_p, seed=req.seed, stop=req.stop,
                           options=options or None)


@dataclass(frozen=True)
class Completion:
    """A parsed 200 answer; ``error`` is set when it carries no usable content."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str | None
    error: str | None = None
    error_message: str = ""


class MalformedResponse(ValueError):
    """A 200 whose body is not a chat.completion: retried like a 5xx."""


def parse_completion(data: str | bytes | dict) -> Completion:
    """Strictly read a chat.completion body (text, or already-decoded JSON)."""
    try:
        if not isinstance(data, dict):
            data = json.loads(data)
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        snippet = (data if isinstance(data, str) else json.dumps(data, default=str))[:120]
        raise MalformedResponse(f"malformed response ({type(exc).__name__}): "
                                f"{snippet.replace(chr(10), ' ')!r}") from None
    if text is not None and not isinstance(text, str):
        raise MalformedResponse(f"malformed response: message content is "
                                f"{type(text).__name__}")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    finish = choice.get("finish_reason")
    model = data.get("model") if isinstance(data.get("model"), str) else None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(
        usage.get("completion_tokens") or 0)
    if text:
        return Completion(text, finish, prompt, completion, model)
    # No content at all: a content filter (finish_reason content_filter, or a refusal field)
    # or a model that spent every token elsewhere (e.g. on hidden reasoning).
    refusal = message.get("refusal")
    if finish == "content_filter" or refusal:
        why = f"refused: {str(refusal)[:300]}" if refusal else "finish_reason content_filter"
        return Completion("", finish, prompt, completion, model, "content_filter",
                          f"no content ({why})")
    return Completion("", finish, prompt, completion, model, "empty_content",
                      f"no content (content {json.dumps(text)}, finish_reason {finish!r})")


def error_message(body: str) -> str:
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


def _error_code(body: str) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    return " ".join(str(error.get(k) or "") for k in ("code", "type", "param")).lower()


def classify_http_error(status: int, body: str) -> tuple[str, str | None]:
    """``("retry", None)``, ``("row", error_class)`` or ``("stage", None)`` for a non-2xx."""
    if status in RETRY_STATUSES or status >= 500:
        return "retry", None
    if status not in ROW_STATUSES:
        return "stage", None  # 401, 403, 404, ...: every request would fail the same way
    text = f"{_error_code(body)} {error_message(body)}".lower()
    if status == 413 or any(m in text for m in _CONTEXT_MARKERS):
        return "row", "context_length"
    if any(m in text for m in _FILTER_MARKERS):
        return "row", "content_filter"
    return "row", "bad_request"
