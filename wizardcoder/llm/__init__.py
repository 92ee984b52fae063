"""LLM access for evolution and answering: one client for the embedded model and paid APIs.

Stages build :class:`ChatRequest` lists and call ``open_client(config).chat_many(...)``; the
package owns everything that makes that safe to run for hours against a paid API or a local
llama.cpp server: pacing, retries, a crash-proof answer cache, and server lifetime.
"""

from wizardcoder.llm.cache import RequestCache, request_key
from wizardcoder.llm.client import (
    ChatRequest,
    ChatResult,
    LLMClient,
    LLMRequestError,
    TooManyRequestErrors,
)
from wizardcoder.llm.config import LLMConfig
from wizardcoder.llm.server import EmbeddedServer, open_client, read_api_key

__all__ = [
    "ChatRequest", "ChatResult", "EmbeddedServer", "LLMClient", "LLMConfig", "LLMRequestError",
    "RequestCache", "TooManyRequestErrors", "open_client", "read_api_key", "request_key",
]
