"""A scripted OpenAI-compatible server on 127.0.0.1 for testing the LLM client's failure policy.

Real providers fail in ways a happy-path test never sees: 429 with Retry-After, 5xx, answers
slower than the client's timeout, truncated JSON. Mocking the client would test our guesses
about the wire; this server speaks real HTTP so the openai package, its exceptions and our
retry code are exercised end to end. Behaviour is scripted per prompt (the last message's
content), because concurrent requests arrive in no fixed order; a ``responder`` can instead
answer by content (e.g. an evolved question for evolve prompts, code for answer prompts), and
``latency`` slows every request down so a client can be killed mid-batch.

Provider behaviours are options: ``reasoning_models`` behave like OpenAI's o-series / GPT-5
(400 on ``max_tokens`` and on a non-default temperature or top_p), ``served_models`` maps the
model asked to the name the completion reports (an alias resolved to a dated snapshot), and
``azure_api_version`` / ``api_key`` make it check Azure's ``api-version`` query and
``api-key`` header (404 / 401 like Azure when they are missing).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Actions, consumed one per request for a prompt; once a script is used up the prompt is
# answered normally ("ok").
OK = "ok"
LENGTH = "length"            # a normal answer cut by max_tokens
MALFORMED = "malformed"      # 200 with a body that is not JSON
SERVER_ERROR = "500"
NULL_CONTENT = "null_content"  # 200 with message.content null (finish_reason stop)
# 400s as OpenAI / Azure OpenAI send them.
CONTEXT_LENGTH = ("status", 400, "This model's maximum context length is 4096 tokens. However, "
                  "your messages resulted in 5012 tokens. Please reduce the length of the "
                  "messages.", "context_length_exceeded")
CONTENT_FILTER = ("status", 400, "The response was filtered due to the prompt triggering Azure "
                  "OpenAI's content management policy.", "content_filter")


def rate_limited(retry_after: str | None = "1") -> tuple:
    """429; ``retry_after`` goes verbatim into the header (seconds or an HTTP date)."""
    return ("429", retry_after)


def delay(seconds: float, then: str = OK) -> tuple:
    """Wait (abortable by shutdown), then act as ``then``."""
    return ("delay", seconds, then)


def status(code: int, message: str = "scripted error", code_name: str | None = None) -> tuple:
    return ("status", code, message, code_name)


def answer_text(prompt: str) -> str:
    return f"answer to {prompt}"


class Reply(tuple):
    """What a responder returns for a normal answer: text and finish_reason."""

    def __new__(cls, text: str, finish_reason: str = "stop"):
        return super().__new__(cls, ("reply", text, finish_reason))


class FaultServer:
    """Use as a context manager; ``url`` is the OpenAI base_url (ending in /v1)."""

    def __init__(self, script: dict[str, list] | None = None, model: str = "fault-model", *,
                 responder: Callable[[dict], object] | None = None, latency: float = 0.0,
                 reasoning_models: tuple[str, ...] = (), served_models: dict | None = None,
                 azure_api_version: str | None = None, api_key: str | None = None):
        """``responder(body)`` answers unscripted requests: a :class:`Reply` or any action
        (SERVER_ERROR, status(...), ...); ``latency`` seconds pass before every answer."""
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.model = model
        self.responder = responder
        self.latency = latency
        self.reasoning_models = set(reasoning_models)
        self.served_models = dict(served_models or {})
        self.azure_api_version = azure_api_version
        self.api_key = api_key
        self.queries: list[dict] = []  # the query parameters of each POST
        self.key_headers: list[str] = []  # the api-key header of each POST ("" if none)
        self.answered: list[dict] = []  # bodies whose 200 answer was written in full
        self.counts: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_action(self, prompt: str, body: dict):
        with self._lock:
            self.counts[prompt] += 1
            steps = self.script.get(prompt)
            if steps:
                return steps.pop(0)
        return self.responder(body) if self.responder else OK

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None,
                      content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (timeout): that is the point of the test
                if code == 200 and self.command == "POST":
                    with server._lock:
                        server.answered.append(self._body)

            def _json(self, code: int, data: dict, headers: dict | None = None) -> None:
                self._send(code, json.dumps(data).encode(), headers)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "owned_by": "test"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self._body = json.loads(self.rfile.read(length) or b"{}")
                query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
                with server._lock:
                    server.in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server.in_flight)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    server.key_headers.append(self.headers.get("api-key", ""))
                    server.queries.append(query)
                    server.bodies.append(body)
                try:
                    refused = self._refuse(body, query)
                    if refused:
                        self._json(refused[0], {"error": refused[1]})
                    else:
                        self._answer(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _refuse(self, body: dict, query: dict) -> tuple[int, dict] | None:
                """What Azure and the o-series models answer to requests they reject."""
                if server.azure_api_version is not None:
                    if query.get("api-version") != server.azure_api_version:
                        return 404, {"code": "404", "message": "Resource not found"}
                    if self.headers.get("api-key") != server.api_key:
                        return 401, {"code": "401", "message": "Access denied due to invalid "
                                     "subscription key or wrong API endpoint."}
                if body.get("model") in server.reasoning_models:
                    if "max_tokens" in body:
                        return 400, {"message": "Unsupported parameter: 'max_tokens' is not "
                                     "supported with this model. Use 'max_completion_tokens' "
                                     "instead.", "type": "invalid_request_error",
                                     "param": "max_tokens", "code": "unsupported_parameter"}
                    for name in ("temperature", "top_p"):
                        if name in body and body[name] != 1:
                            return 400, {"message": f"Unsupported value: '{name}' does not "
                                         f"support {body[name]} with this model. Only the "
                                         f"default (1) value is supported.",
                                         "type": "invalid_request_error", "param": name,
                                         "code": "unsupported_value"}
                return None

            def _answer(self, body: dict) -> None:
                prompt = str(body["messages"][-1]["content"])
                if server.latency:
                    server._stop.wait(server.latency)
                action = server._next_action(prompt, body)
                if isinstance(action, tuple) and action[0] == "delay":
                    server._stop.wait(action[1])
                    action = action[2]
                if isinstance(action, tuple) and action[0] == "429":
                    headers = {"Retry-After": action[1]} if action[1] is not None else {}
                    self._json(429, {"error": {"message": "rate limited", "type": "requests"}},
                               headers)
                elif isinstance(action, tuple) and action[0] == "status":
                    error = {"message": action[2], "type": "invalid_request_error"}
                    if len(action) > 3 and action[3]:
                        error["code"] = action[3]
                    self._json(action[1], {"error": error})
                elif action == SERVER_ERROR:
                    self._json(500, {"error": {"message": "internal error"}})
                elif action == MALFORMED:
                    self._send(200, b'{"id": "x", "choices": [{"message": ')
                elif isinstance(action, Reply) or action in (OK, LENGTH, NULL_CONTENT):
                    if action == NULL_CONTENT:
                        text, finish = None, "stop"
                    elif isinstance(action, Reply):
                        _, text, finish = action
                    else:
                        text = answer_text(prompt)
                        finish = "stop" if action == OK else "length"
                    if action == LENGTH:
                        text = " ".join(text.split()[:2])
                    words = len((text or "").split())
                    asked = body.get("model", server.model)
                    self._json(200, {
                        "id": f"chatcmpl-{server.total}", "object": "chat.completion",
                        "created": int(time.time()),
                        "model": server.served_models.get(asked, server.model),
                        "choices": [{"index": 0, "finish_reason": finish,
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": words,
                                  "total_tokens": 10 + words},
                    })
                else:
                    raise ValueError(f"unknown fault action {action!r}")

        return Handler
