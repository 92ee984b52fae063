"""Where requests go and with which key: one OpenAI-compatible endpoint.

The online client (:mod:`wizardcoder.llm.client`) and the Batch API path
(:mod:`wizardcoder.llm.batch`) talk to the same endpoint with the same key. The key lives
only here: name-mangled, never in a repr, a log line or an error (every text from the
server goes through :meth:`Endpoint.redact`), and in the header of the sessions opened here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from wizardcoder.credentials import redact, redact_key_shaped
from wizardcoder.llm.config import LLMConfig

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Endpoint:
    """``base_url`` (including /v1) under ``config``, authenticated with ``api_key``."""

    def __init__(self, config: LLMConfig, base_url: str, api_key: str | None):
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.__api_key = api_key or ""

    def __repr__(self) -> str:
        return f"Endpoint(base_url={self.base_url!r})"

    def redact(self, text: str) -> str:
        """Remove the key (and anything shaped like one) from text meant for humans."""
        return redact_key_shaped(redact(text, [self.__api_key]))

    def session(self):
        """An aiohttp session carrying the key in the header ``llm.auth_header`` names."""
        import aiohttp  # imported lazily: config validation and dry runs do not need it

        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "wizardcoder-llm-client"}
        if self.__api_key:
            if self.config.auth_header == "api-key":  # Azure OpenAI
                headers["api-key"] = self.__api_key
            else:
                headers["Authorization"] = f"Bearer {self.__api_key}"
        # The client's semaphore bounds requests in flight; the connector must not bound
        # them lower (aiohttp's default is 100 connections).
        connector = aiohttp.TCPConnector(limit=self.config.max_in_flight, limit_per_host=0)
        # A proxy from the environment must never see loopback traffic (or break it); remote
        # endpoints honour HTTPS_PROXY like the openai SDK does.
        loopback = urlsplit(self.base_url).hostname in LOOPBACK_HOSTS
        return aiohttp.ClientSession(
            headers=headers, connector=connector, trust_env=not loopback,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
