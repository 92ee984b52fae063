"""The `llm` section of params.yaml: which model answers, and how hard we may push it.

Everything that changes *what* a model answers (model, sampling) lives in the stages that
build requests; this section only says where requests go, how they are paced and retried,
and what their tokens cost, so changing concurrency, retry or price settings never
invalidates cached answers. The key itself
is never a parameter: params are logged to MLflow and committed to git, so only the *name*
of the environment variable that holds it is configured here, and values that look like a
key are rejected without being echoed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from wizardcoder.config import option, require
from wizardcoder.credentials import check_key_env, is_secret_name, looks_like_key
from wizardcoder.embedded import EMBEDDED_MODEL_ID
from wizardcoder.llm.limits import Prices

SECTION = "llm"
PROVIDERS = ("embedded", "openai")
OPENAI_BASE_URL = "https://api.openai.com/v1"
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")
AUTH_HEADERS = ("Authorization", "api-key")
# The evolve stage's LLM steps; each may name its own model in llm.step_models.
STEP_NAMES = ("evolve", "judge", "answer")
# Query parameters that carry credentials (`api-key`, OAuth tokens, and Azure SAS `sig`,
# which is named like no other secret): keys belong in the environment, never in params.
_SAS_SIGNATURE = "sig"
# llm.mode: 'batch' sends through OpenAI's Batch API, whose input files hold at most 50,000
# requests and 200 MB.
MODES = ("online", "batch")
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200_000_000


def openai_identity(model: str, base_url: str) -> str:
    """Cache identity of a model behind an OpenAI-compatible endpoint. The port stays in it:
    two local servers may serve different weights under the same model name."""
    parts = urlsplit(base_url.rstrip("/"))
    return f"openai:{model}@{parts.netloc}{parts.path}"


@dataclass
class LLMConfig:
    """params.yaml section `llm`: the model evolution talks to (embedded or OpenAI-compatible)."""

    provider: str = option(
        "embedded", choices=PROVIDERS,
        help="'embedded' starts llama.cpp's OpenAI-compatible server on 127.0.0.1 with the "
             "bundled SmolLM2 GGUF (no network, no key); 'openai' sends requests to any "
             "OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama) at base_url.")
    base_url: str | None = option(
        None,
        help="OpenAI-compatible base URL including /v1, e.g. http://127.0.0.1:8000/v1 for "
             "vLLM. null means https://api.openai.com/v1. Only used with provider 'openai'.")
    model: str = option(
        EMBEDDED_MODEL_ID,
        help="Model name sent with each request. With 'embedded' it must be the bundled "
             f"model ({EMBEDDED_MODEL_ID}); with 'openai' it is the provider's model name.")
    api_key_env: str = option(
        "OPENAI_API_KEY",
        help="NAME of the environment variable holding the API key (never the key itself). "
             "Required to be set for api.openai.com; optional for custom base_urls.",
        affects_outputs=False)
    step_models: dict[str, str] = option(
        default_factory=dict,
        help=f"Model per evolve step, e.g. {{judge: gpt-4o-mini}}; steps: {list(STEP_NAMES)}. "
             "A step not named uses llm.model (the paper uses one model for all). Same "
             "endpoint and key; each model has its own cache entries. Provider 'openai' only.")
    token_limit_param: str = option(
        "max_tokens", choices=TOKEN_LIMIT_PARAMS,
        help="Name of the answer-length parameter sent: 'max_tokens', or "
             "'max_completion_tokens' for models that reject max_tokens (OpenAI o-series, "
             "GPT-5). Part of the cache key when not max_tokens.")
    fixed_temperature: bool = option(
        False,
        help="true for models that accept only their default sampling (OpenAI o-series, "
             "GPT-5): temperature and top_p are not sent (evolve.*temperature/top_p are "
             "then ignored and recorded as null in the lineage).")
    query_params: dict[str, str] = option(
        default_factory=dict,
        help="Query parameters added to every request, e.g. {api-version: '2024-10-21'} for "
             "Azure OpenAI (base_url itself must not carry a query). Never a key.")
    auth_header: str = option(
        "Authorization", choices=AUTH_HEADERS,
        help="How the key is sent: 'Authorization' (Bearer <key>: OpenAI, vLLM, most "
             "servers) or 'api-key' (the key as is: Azure OpenAI).",
        affects_outputs=False)
    resend_cached_errors: bool = option(
        False,
        help="Resend requests whose permanent failure (400, content filter, no content) is "
             "in the request cache instead of replaying the failure, e.g. after fixing an API "
             "setting that made them fail; the new outcome replaces the cached one.")
    max_in_flight: int = option(4, help="Most requests awaiting an answer at once.",
        affects_outputs=False)
    requests_per_minute: int = option(
        0, help="Client-side request rate limit; 0 = unlimited.",
        affects_outputs=False)
    tokens_per_minute: int = option(
        0, help="Client-side token rate limit, counting prompt chars/4 + max_tokens per "
                "request (how providers meter); 0 = unlimited.",
        affects_outputs=False)
    timeout_s: float = option(
        120.0, help="Seconds to wait for one answer before it counts as a failed attempt.",
        affects_outputs=False)
    max_retries: int = option(
        6, help="Retries after the first attempt for 429, 5xx, timeouts, connection errors "
                "and malformed answers. A request still failing after them stops the evolve "
                "stage once its step is done (exit 2, nothing written, every answer cached: "
                "a rerun retries it); it never drops its row.",
        affects_outputs=False)
    backoff_initial_s: float = option(
        1.0, help="First retry waits up to this long (exponential backoff, full jitter).",
        affects_outputs=False)
    backoff_max_s: float = option(
        60.0, help="Cap of one backoff wait (a server's Retry-After is honoured as given).",
        affects_outputs=False)
    price_per_million_prompt_tokens: float = option(
        0.0, help="USD per million prompt (input) tokens, for the cost figures of each round "
                  "and for evolve.budget_usd; 0 = unpriced (e.g. the embedded model). Not "
                  "part of the request cache key: changing it re-prices, never re-asks (a "
                  "param of evolve for its headline rN_cost_usd: the rerun replays the "
                  "cache).")
    price_per_million_completion_tokens: float = option(
        0.0, help="USD per million completion (output) tokens; see "
                  "price_per_million_prompt_tokens.")
    embedded_n_ctx: int = option(
        2048, help="Context window of the embedded llama.cpp server (prompt + answer tokens).")
    embedded_n_threads: int = option(
        0, help="CPU threads of the embedded server; 0 = all cores.",
        affects_outputs=False)
    embedded_startup_timeout_s: float = option(
        120.0, help="Seconds to wait for the embedded server to load the model and answer.",
        affects_outputs=False)
    mode: str = option(
        "online", choices=MODES,
        help="'online' sends each request and waits for it; 'batch' sends each evolve "
             "step's uncached requests through OpenAI's Batch API (half the price, answers "
             "within 24 h), resumes its batches after a kill and caches every answer "
             "(docs/evolution.md, Batch API). Provider 'openai' only. Not part of the cache key.",
        affects_outputs=False)
    batch_poll_s: float = option(
        30.0, help="With mode 'batch': seconds before the first status poll of a batch; the "
                   "wait grows 1.5x per poll up to batch_poll_max_s.",
        affects_outputs=False)
    batch_poll_max_s: float = option(
        300.0, help="With mode 'batch': the longest wait between two status polls.",
        affects_outputs=False)
    batch_max_requests: int = option(
        BATCH_MAX_REQUESTS, help=f"With mode 'batch': most requests per batch input file "
                                 f"(OpenAI: {BATCH_MAX_REQUESTS}); more are split.",
        affects_outputs=False)
    batch_max_bytes: int = option(
        BATCH_MAX_BYTES, help=f"With mode 'batch': most bytes per batch input file (OpenAI: "
                              f"200 MB = {BATCH_MAX_BYTES}); larger ones are split.",
        affects_outputs=False)
    batch_retries: int = option(
        3, help="With mode 'batch': follow-up batches within one run for the lines that "
                "failed transiently (a 429/5xx line, a line an expired or cancelled batch "
                "never ran, an unreadable answer), each holding only those lines, after a "
                "backoff. A line still failing after them stops the stage (nothing written, "
                "every answer cached: a rerun retries it); no row is dropped for it.",
        affects_outputs=False)
    batch_patience_s: float = option(
        21600.0, help="With mode 'batch': how long the Batch API may keep failing (5xx, "
                      "timeouts, connection errors) while batches are submitted, polled or "
                      "downloaded before the stage gives up (they keep running at the "
                      "provider; a rerun resumes them). Retries wait with backoff up to "
                      "batch_poll_max_s; the clock restarts after each success.",
        affects_outputs=False)

    def __post_init__(self) -> None:
        s = SECTION
        require(self.provider in PROVIDERS, s, "provider", f"one of {list(PROVIDERS)}")
        require(bool(self.model and self.model.strip()), s, "model", "a non-empty model name")
        if self.provider == "embedded":
            require(self.model == EMBEDDED_MODEL_ID, s, "model",
                    f"{EMBEDDED_MODEL_ID!r} with provider 'embedded' (it serves only the "
                    f"bundled GGUF); use provider 'openai' with a base_url for other models")
            require(self.base_url is None, s, "base_url",
                    "null with provider 'embedded' (set provider: openai to use base_url)")
        elif self.base_url is None:
            require(self.model != EMBEDDED_MODEL_ID, s, "model",
                    "an OpenAI model name (e.g. gpt-4o-mini) when base_url is null; the "
                    "bundled model is served by provider 'embedded'")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            require(parts.scheme in ("http", "https") and bool(parts.hostname), s, "base_url",
                    "null or an http(s) URL such as http://127.0.0.1:8000/v1")
            # Credentials in the URL would be logged with params; keys belong in api_key_env.
            require(parts.username is None and parts.password is None, s, "base_url",
                    "a URL without user:password@ (keys go in the environment variable named "
                    "by api_key_env)")
            require(not parts.query and not parts.fragment, s, "base_url",
                    "a URL without ?query or #fragment: put query parameters such as Azure's "
                    "api-version in llm.query_params, e.g. {api-version: '2024-10-21'}")
        check_key_env(s, "api_key_env", self.api_key_env)
        for step, model in self.step_models.items():
            require(step in STEP_NAMES, s, f"step_models.{step}",
                    f"a step name, one of {list(STEP_NAMES)}")
            require(bool(model and model.strip()), s, f"step_models.{step}",
                    "a non-empty model name")
        if self.provider == "embedded":
            require(all(m == self.model for m in self.step_models.values()), s,
                    "step_models", "{} with provider 'embedded' (it serves only the bundled "
                    "model); use provider 'openai' to give a step its own model")
        for name, value in self.query_params.items():
            require(bool(re.fullmatch(r"[A-Za-z0-9_.\-]+", name)), s, f"query_params.{name}",
                    "a parameter name of letters, digits, '_', '-' or '.'")
            # Neither the name nor the value is echoed: it may be a key.
            secret_name = is_secret_name(name) or _SAS_SIGNATURE in name.lower()
            require(not secret_name and not looks_like_key(str(value)), s,
                    "query_params", "no credentials (a parameter named like a key/token/"
                    "signature or a value that looks like a key was given and is not shown); "
                    "keys go in the environment variable named by api_key_env, sent in the "
                    "header chosen by auth_header")
        require(self.max_in_flight >= 1, s, "max_in_flight", "an integer >= 1")
        require(self.requests_per_minute >= 0, s, "requests_per_minute",
                "an integer >= 0 (0 = unlimited)")
        require(self.tokens_per_minute >= 0, s, "tokens_per_minute",
                "an integer >= 0 (0 = unlimited)")
        require(self.timeout_s > 0, s, "timeout_s", "a number of seconds > 0")
        require(self.max_retries >= 0, s, "max_retries", "an integer >= 0")
        require(self.backoff_initial_s >= 0, s, "backoff_initial_s", "a number >= 0")
        require(self.backoff_max_s >= self.backoff_initial_s, s, "backoff_max_s",
                f"a number >= backoff_initial_s ({self.backoff_initial_s})")
        for name in ("price_per_million_prompt_tokens", "price_per_million_completion_tokens"):
            require(getattr(self, name) >= 0, s, name, "a price in USD >= 0 (0 = unpriced)")
        require(self.embedded_n_ctx >= 128, s, "embedded_n_ctx", "an integer >= 128")
        require(self.embedded_n_threads >= 0, s, "embedded_n_threads",
                "an integer >= 0 (0 = all cores)")
        require(self.embedded_startup_timeout_s > 0, s, "embedded_startup_timeout_s",
                "a number of seconds > 0")
        require(self.mode in MODES, s, "mode", f"one of {list(MODES)}")
        require(self.mode == "online" or self.provider == "openai", s, "mode",
                "'online' with provider 'embedded' (the batch API is OpenAI's; use provider "
                "'openai')")
        require(self.batch_poll_s > 0, s, "batch_poll_s", "a number of seconds > 0")
        require(self.batch_poll_max_s >= self.batch_poll_s, s, "batch_poll_max_s",
                f"a number >= batch_poll_s ({self.batch_poll_s})")
        require(self.batch_retries >= 0, s, "batch_retries", "an integer >= 0")
        require(self.batch_patience_s >= 0, s, "batch_patience_s", "a number of seconds >= 0")
        require(1 <= self.batch_max_requests <= BATCH_MAX_REQUESTS, s, "batch_max_requests",
                f"an integer from 1 to {BATCH_MAX_REQUESTS}")
        require(1024 <= self.batch_max_bytes <= BATCH_MAX_BYTES, s, "batch_max_bytes",
                f"an integer from 1024 to {BATCH_MAX_BYTES}")

    @property
    def prices(self) -> Prices:
        return Prices(self.price_per_million_prompt_tokens,
                      self.price_per_million_completion_tokens)

    @property
    def effective_base_url(self) -> str:
        """Where 'openai' requests go (the embedded server's URL is only known once started)."""
        return (self.base_url or OPENAI_BASE_URL).rstrip("/")

    def step_model(self, step: str) -> str:
        """The model asked for one evolve step."""
        return self.step_models.get(step, self.model)

    @property
    def is_openai_cloud(self) -> bool:
        return self.provider == "openai" and (
            urlsplit(self.effective_base_url).hostname == "api.openai.com")
