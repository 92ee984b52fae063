"""Where requests go and with which key: one OpenAI-compatible endpoint.

The online client (:mod:`wizardcoder.llm.client`) and the Batch API path
(:mod:`wizardcoder.llm.batch`) talk to the same endpoint with the same key. The key lives
only here: name-mangled, never in a repr, a log line or an error (every text from the
server goes through :meth:`Endpoint.redact`), and in the header of the sessions opened here.

A server that refuses the connection is not there (nothing listens on the port): waiting
and retrying cannot help unless it is a remote server that has already answered in this
run (a restart behind a load balancer). :func:`is_connection_refused` tells that case
apart, and :meth:`Endpoint.unreachable` says which URL and how to start what was expected.
"""

from __future__ import annotations

import errno
import ipaddress
import shlex
import socket
import urllib.request
from urllib.parse import urlsplit

from wizardcoder.credentials import redact, redact_key_shaped
from wizardcoder.embedded import EMBEDDED_MODEL_ID
from wizardcoder.errors import ExternalError
from wizardcoder.llm.config import LLMConfig


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (127.0.0.0/8, ::1, localhost)."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_connection_refused(exc: BaseException) -> bool:
    """Whether ``exc`` (an aiohttp/httpx/openai error or an OSError, possibly wrapping one)
    means nothing listens at the address: ECONNREFUSED, on every address tried."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError) or getattr(err, "errno", None) == \
                errno.ECONNREFUSED:
            return True
        # asyncio joins the errors of several addresses (::1 and 127.0.0.1 for localhost)
        # into one OSError without an errno; refused on each is still refused.
        text = str(err)
        if text.startswith("Multiple exceptions: ") and text.count("[Errno") == \
                text.count(f"[Errno {errno.ECONNREFUSED}]"):
            return True
        stack += [getattr(err, "os_error", None), err.__cause__, err.__context__]
    return False


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


def refuses_connections(url: str, timeout_s: float = 3.0) -> bool:
    """One TCP connect to ``url``'s host and port (no request): True when it is refused,
    i.e. nothing listens there. False where a proxy carries the traffic (the proxy, not the
    server, would answer) and on a timeout or a DNS failure (left to the caller's retries)."""
    parts = urlsplit(url)
    if not is_loopback(url) and urllib.request.getproxies().get(parts.scheme) \
            and not urllib.request.proxy_bypass(parts.hostname or ""):
        return False
    try:
        socket.create_connection(host_port(url), timeout=timeout_s).close()
    except OSError as exc:
        return is_connection_refused(exc)
    return False


def local_server_commands(base_url: str, model: str, gguf: str | None = None) -> list[str]:
    """Commands that start an OpenAI-compatible server answering ``model`` at ``base_url``:
    llama.cpp for a GGUF file, vLLM for a Hugging Face model (id or directory)."""
    host, port = host_port(base_url)
    at = f"--host {host} --port {port}"
    if gguf:
        return [f"python -m llama_cpp.server --model {shlex.quote(gguf)} "
                f"--model_alias {shlex.quote(model)} {at}"]
    return [f"python -m llama_cpp.server --model MODEL.gguf --model_alias "
            f"{shlex.quote(model)} {at}", f"vllm serve {shlex.quote(model)} {at}"]


def refused_message(base_url: str, setting: str, commands: list[str], note: str = "") -> str:
    """The error for a server that is not there: the URL, the setting that names it, and
    the commands that would start it."""
    start = " or ".join(f"`{c}`" for c in commands)
    return (f"nothing answers at {base_url} ({setting}: connection refused{note}); start the "
            f"server it expects, e.g. {start}")


class Endpoint:
    """``base_url`` (including /v1) under ``config``, authenticated with ``api_key``.

    ``server_command``: the command that starts the server expected at ``base_url`` when
    the caller knows it (the embedded server); otherwise the error suggests one."""

    def __init__(self, config: LLMConfig, base_url: str, api_key: str | None,
                 server_command: str | None = None):
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.__api_key = api_key or ""
        self.server_command = server_command

    def __repr__(self) -> str:
        return f"Endpoint(base_url={self.base_url!r})"

    def redact(self, text: str) -> str:
        """Remove the key (and anything shaped like one) from text meant for humans."""
        return redact_key_shaped(redact(text, [self.__api_key]))

    def unreachable(self) -> str:
        """The message for a refused connection: the URL and the command that starts the
        server this configuration expects there."""
        if self.server_command:
            return refused_message(self.base_url, "the embedded llama.cpp server",
                                   [self.server_command], ": it has stopped")
        if not is_loopback(self.base_url):
            return (f"nothing answers at {self.base_url} (llm.base_url: connection refused): "
                    f"check its host and port, and that the server is up")
        model, gguf = self.config.model, None
        if model == EMBEDDED_MODEL_ID:  # the bundled GGUF, served by hand
            from wizardcoder.embedded import embedded_gguf_path

            gguf = str(embedded_gguf_path())
        return (refused_message(self.base_url, "llm.base_url",
                                local_server_commands(self.base_url, model, gguf))
                + "; or let the stage start the bundled model itself: llm.provider: embedded, "
                  "llm.base_url: null")

    def check_listening(self, timeout_s: float = 3.0) -> None:
        """Fail at once, before anything else starts, when the server refuses connections
        (:func:`refuses_connections`)."""
        if refuses_connections(self.base_url, timeout_s):
            raise ExternalError(self.unreachable())

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
        loopback = is_loopback(self.base_url)
        return aiohttp.ClientSession(
            headers=headers, connector=connector, trust_env=not loopback,
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
