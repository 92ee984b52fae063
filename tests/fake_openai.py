"""The tests' one fake OpenAI-compatible server: a real HTTP server on 127.0.0.1.

Mocking the client would test our guesses about the wire; this module speaks real HTTP so
the openai package, its exceptions and our retry / batch code are exercised end to end. Two
servers share the HTTP plumbing (:class:`_LocalServer`, :class:`_JSONHandler`), the scripted
actions and the chat.completion body (:func:`completion`):

:class:`FaultServer` -- online ``/v1/chat/completions`` (and ``/v1/models``) for the LLM
client's failure policy. Real providers fail in ways a happy-path test never sees: 429 with
Retry-After, 5xx, answers slower than the client's timeout, truncated JSON. Behaviour is
scripted per prompt (the last message's content), because concurrent requests arrive in no
fixed order; a ``responder`` can instead answer by content (e.g. an evolved question for
evolve prompts, code for answer prompts), and ``latency`` slows every request down so a
client can be killed mid-batch. Provider behaviours are options: ``reasoning_models`` behave
like OpenAI's o-series / GPT-5 (400 on ``max_tokens`` and on a non-default temperature or
top_p), ``served_models`` maps the model asked to the name the completion reports (an alias
resolved to a dated snapshot), and ``azure_api_version`` / ``api_key`` make it check Azure's
``api-version`` query and ``api-key`` header (404 / 401 like Azure when they are missing).

:class:`BatchServer` -- an OpenAI Batch API: files, batches and chat completions. It speaks
the real wire format (multipart upload to ``/v1/files``, ``/v1/batches`` objects with
``request_counts``, output and error files of ``{"custom_id", "response": {"status_code",
"body"}, "error"}`` lines) and enforces OpenAI's input rules (one model and one endpoint per
file, unique custom_ids, a request and byte limit per file) so the client's splitting and
validation are tested against something that says no. Each batch is worked by a thread:
``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``, or ``expired`` after
``expire_after`` lines (the rest go to the error file as ``batch_expired``, as OpenAI does).
``hold`` keeps batches ``in_progress`` until :meth:`BatchServer.release`, so a client can be
killed while it polls. Batches run whether or not anyone polls; faults of the API itself:
``fail_polls`` (the next N status polls answer 500), ``lose_creates`` (a batch is created but
the answer is a 502; ``flood_after_lost_create`` other batches are created right after, as by
the rest of an organisation), :meth:`BatchServer.outage` (every files/batches call answers
503 for a while), ``shuffle`` (output lines in random order); ``POST
/v1/batches/{id}/cancel`` cancels a batch (lines not yet run are in neither file).
Lines are answered by the same ``responder(body)`` and per-prompt
``script`` as :class:`FaultServer`, and ``/v1/chat/completions`` answers online with the same
bodies, so a batch run and an online run of one round can be compared row for row.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import random
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


ENDPOINT = "/v1/chat/completions"
TERMINAL = ("completed", "failed", "expired", "cancelled")


def line_error(code: str, message: str) -> tuple:
    """A batch line that failed without an HTTP response (the line's ``error`` field)."""
    return ("line_error", code, message)


def completion(model: str, text: str | None, finish: str, n: int) -> dict:
    """The chat.completion body every path returns."""
    words = len((text or "").split())
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": words,
                      "total_tokens": 10 + words}}


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 1024  # listen() backlog: 5 drops a burst of connections for 1 s


class _LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 (an ephemeral port) run by a daemon thread; use as a
    context manager. ``url`` is the OpenAI base_url (ending in /v1)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = _HTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()


class _JSONHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with Content-Length, JSON bodies, no request log; a client that hung up
    before the answer was written is not an error (that is what timeout tests do)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed ACK)

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
        self._written(code)

    def _written(self, code: int) -> None:
        """Called once an answer was written in full."""

    def _json(self, code: int, data: dict, headers: dict | None = None) -> None:
        self._send(code, json.dumps(data).encode(), headers)


class FaultServer(_LocalServer):
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
        super().__init__()

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def _next_action(self, prompt: str, body: dict):
        with self._lock:
            self.counts[prompt] += 1
            steps = self.script.get(prompt)
            if steps:
                return steps.pop(0)
        return self.responder(body) if self.responder else OK

    def _handler_class(self):
        server = self

        class Handler(_JSONHandler):
            def _written(self, code: int) -> None:
                if code == 200 and self.command == "POST":
                    with server._lock:
                        server.answered.append(self._body)

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
                    asked = body.get("model", server.model)
                    self._json(200, completion(server.served_models.get(asked, server.model),
                                               text, finish, server.total))
                else:
                    raise ValueError(f"unknown fault action {action!r}")

        return Handler


class BatchServer(_LocalServer):
    """Use as a context manager; ``url`` is the OpenAI base_url (ending in /v1)."""

    def __init__(self, script: dict[str, list] | None = None, model: str = "fault-model", *,
                 responder: Callable[[dict], object] | None = None, hold: bool = False,
                 line_delay: float = 0.0, expire_after: int | None = None,
                 max_requests_per_file: int = 50_000, max_bytes_per_file: int = 200_000_000):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.model = model
        self.responder = responder
        self.line_delay = line_delay
        self.expire_after = expire_after
        self.max_requests_per_file = max_requests_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self.fail_polls = 0  # the next N GET /v1/batches/{id} answer 500
        self.lose_creates = 0  # the next N POST /v1/batches create the batch, then answer 502
        self.flood_after_lost_create = 0  # other batches created right after a lost create
        self.shuffle = False  # output and error lines in random order
        self.outage_until = 0.0  # time.monotonic() until which every API call answers 503
        self.outage_hits = 0  # calls answered 503 by an outage
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.line_counts: Counter[str] = Counter()   # prompt -> lines worked in batches
        self.paid: Counter[str] = Counter()          # custom_id -> lines answered 200 (billed)
        self.chat_bodies: list[dict] = []            # online /chat/completions requests
        self.auth_headers: list[str] = []
        self.requests: Counter[str] = Counter()      # "POST /v1/batches" -> count
        self._ids = itertools.count(1)
        self._released = threading.Event()
        if not hold:
            self._released.set()
        super().__init__()

    @property
    def created(self) -> int:
        """Batches created so far (each is money spent at OpenAI)."""
        return self.requests["POST /v1/batches"]

    def release(self) -> None:
        """Let held batches run."""
        self._released.set()

    def outage(self, seconds: float) -> None:
        """Every call to /v1/files and /v1/batches answers 503 for ``seconds`` from now
        (batches keep running)."""
        self.outage_until = time.monotonic() + seconds

    def add_foreign_batches(self, n: int) -> None:
        """``n`` finished batches of someone else in the organisation, newer than all so far
        (they come first in GET /v1/batches)."""
        now = int(time.time())
        for _ in range(n):
            batch_id = self._new_id("batch")
            with self._lock:
                self.batches[batch_id] = {
                    "id": batch_id, "object": "batch", "endpoint": ENDPOINT, "errors": None,
                    "input_file_id": f"file-foreign-{batch_id}", "completion_window": "24h",
                    "status": "completed", "created_at": now,
                    "request_counts": {"total": 1, "completed": 1, "failed": 0},
                    "metadata": None}

    @property
    def paid_lines(self) -> int:
        """Request lines worked in batches so far (each one is paid)."""
        with self._lock:
            return sum(self.line_counts.values())

    def __exit__(self, *exc) -> None:
        self._released.set()
        super().__exit__(*exc)

    # -- the model: one answer per request body ------------------------------------------------

    def answer(self, body: dict) -> tuple[int | None, dict]:
        """(status, body) of a chat request; status None means a non-HTTP line error."""
        prompt = str(body["messages"][-1]["content"])
        with self._lock:
            steps = self.script.get(prompt)
            action = steps.pop(0) if steps else None
            n = next(self._ids)
        if action is None:
            action = self.responder(body) if self.responder else OK
        kind = action[0] if isinstance(action, tuple) and not isinstance(action, Reply) else None
        if kind == "status":  # status(...) / CONTEXT_LENGTH / CONTENT_FILTER
            error = {"message": action[2], "type": "invalid_request_error", "param": None,
                     "code": action[3] if len(action) > 3 else None}
            return action[1], {"error": error}
        if kind == "429":
            return 429, {"error": {"message": "rate limited", "type": "requests"}}
        if kind == "line_error":
            return None, {"code": action[1], "message": action[2]}
        if action == SERVER_ERROR:
            return 500, {"error": {"message": "internal error"}}
        if isinstance(action, Reply):
            return 200, completion(self.model, action[1], action[2], n)
        if action in (OK, LENGTH, NULL_CONTENT):
            text = None if action == NULL_CONTENT else answer_text(prompt)
            if action == LENGTH:
                text = " ".join(text.split()[:2])
            return 200, completion(self.model, text, "length" if action == LENGTH else "stop", n)
        raise ValueError(f"unknown batch server action {action!r}")

    # -- batches -------------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._ids):06d}"

    def _store_file(self, content: bytes, purpose: str, filename: str) -> dict:
        file_id = self._new_id("file")
        obj = {"id": file_id, "object": "file", "bytes": len(content),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
               "status": "processed", "content": content}
        with self._lock:
            self.files[file_id] = obj
        return obj

    def _create_batch(self, data: dict) -> tuple[int, dict]:
        missing = [k for k in ("input_file_id", "endpoint", "completion_window") if k not in data]
        if missing:
            return 400, _err(f"Missing required parameter(s): {missing}")
        if data["endpoint"] != ENDPOINT or data["completion_window"] != "24h":
            return 400, _err("endpoint must be /v1/chat/completions and completion_window 24h")
        with self._lock:
            file = self.files.get(data["input_file_id"])
        if file is None or file["purpose"] != "batch":
            return 404, _err(f"No such File object: {data['input_file_id']}")
        now = int(time.time())
        batch = {"id": self._new_id("batch"), "object": "batch", "endpoint": ENDPOINT,
                 "errors": None, "input_file_id": file["id"], "completion_window": "24h",
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": now, "in_progress_at": None, "expires_at": now + 86400,
                 "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0},
                 "metadata": data.get("metadata")}
        with self._lock:
            self.batches[batch["id"]] = batch
        threading.Thread(target=self._work, args=(batch, file["content"]), daemon=True).start()
        return 200, self._public(batch)

    def _public(self, batch: dict) -> dict:
        with self._lock:
            return json.loads(json.dumps(batch))

    def _validate(self, content: bytes) -> tuple[list[dict], list[dict]]:
        lines, errors, seen, models = [], [], set(), set()
        if len(content) > self.max_bytes_per_file:
            return [], [{"code": "file_too_large", "line": None,
                         "message": f"file has {len(content)} bytes; at most "
                                    f"{self.max_bytes_per_file}"}]
        for no, raw in enumerate(content.decode("utf-8").splitlines(), 1):
            try:
                line = json.loads(raw)
                ok = (line["method"] == "POST" and line["url"] == ENDPOINT
                      and isinstance(line["custom_id"], str)
                      and isinstance(line["body"]["messages"], list))
                models.add(line["body"]["model"])
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                errors.append({"code": "invalid_request", "line": no,
                               "message": "not a valid batch request line"})
            elif line["custom_id"] in seen:
                errors.append({"code": "duplicate_custom_id", "line": no,
                               "message": f"custom_id {line['custom_id']} is not unique"})
            else:
                seen.add(line["custom_id"])
                lines.append(line)
        if len(lines) > self.max_requests_per_file:
            errors.append({"code": "too_many_requests", "line": None,
                           "message": f"{len(lines)} requests; at most "
                                      f"{self.max_requests_per_file} per file"})
        if len(models) > 1:
            errors.append({"code": "mixed_models", "line": None,
                           "message": f"one model per file, got {sorted(models)}"})
        return lines, errors

    def _set(self, batch: dict, **fields) -> None:
        with self._lock:
            batch.update(fields)

    def _work(self, batch: dict, content: bytes) -> None:
        lines, errors = self._validate(content)
        if errors:
            self._set(batch, status="failed", failed_at=int(time.time()),
                      errors={"object": "list", "data": errors})
            return
        self._set(batch, status="in_progress", in_progress_at=int(time.time()),
                  request_counts={"total": len(lines), "completed": 0, "failed": 0})
        while not self._released.wait(0.02) and batch["status"] != "cancelling":
            pass
        out, err = [], []
        for i, line in enumerate(lines):
            if self._stop.is_set():
                return
            if batch["status"] == "cancelling":
                break
            if self.expire_after is not None and i >= self.expire_after:
                err += [{"id": f"batch_req_{j}", "custom_id": rest["custom_id"],
                         "response": None,
                         "error": {"code": "batch_expired", "message": "This request could "
                                   "not be executed before the completion window expired."}}
                        for j, rest in enumerate(lines[i:], i)]
                break
            if self.line_delay:
                self._stop.wait(self.line_delay)
            with self._lock:
                self.line_counts[str(line["body"]["messages"][-1]["content"])] += 1
            status, body = self.answer(line["body"])
            entry = {"id": f"batch_req_{i}", "custom_id": line["custom_id"]}
            if status is None:
                entry |= {"response": None, "error": body}
            else:
                entry |= {"response": {"status_code": status, "request_id": f"req_{i}",
                                       "body": body}, "error": None}
            (out if status == 200 else err).append(entry)
            if status == 200:
                with self._lock:
                    self.paid[line["custom_id"]] += 1
            counts = dict(batch["request_counts"])
            counts["completed" if status == 200 else "failed"] += 1
            self._set(batch, request_counts=counts)
        expired = self.expire_after is not None and len(lines) > self.expire_after
        cancelled = batch["status"] == "cancelling"
        if not cancelled:
            self._set(batch, status="finalizing", finalizing_at=int(time.time()))
        ids = {}
        for name, entries in (("output_file_id", out), ("error_file_id", err)):
            if self.shuffle:
                random.shuffle(entries)
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                ids[name] = self._store_file(data, "batch_output", f"{batch['id']}_{name}")["id"]
        final = "cancelled" if cancelled else "expired" if expired else "completed"
        self._set(batch, status=final, **{f"{final}_at": int(time.time())}, **ids)

    # -- HTTP ----------------------------------------------------------------------------------

    def _handler_class(self):
        server = self

        class Handler(_JSONHandler):
            def _route(self) -> str:
                path = urlsplit(self.path).path.rstrip("/")
                with server._lock:
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    route = "/".join(p if not p.startswith(("file-", "batch-")) else "{id}"
                                     for p in path.split("/"))
                    server.requests[f"{self.command} {route}"] += 1
                return path

            def _outage(self) -> bool:
                """During :meth:`BatchServer.outage`: answer 503 (and True)."""
                if time.monotonic() >= server.outage_until:
                    return False
                with server._lock:
                    server.outage_hits += 1
                self._json(503, {"error": {"message": "Service Unavailable"}})
                return True

            def do_GET(self) -> None:
                path = self._route()
                parts = path.split("/")
                if self._outage():
                    return
                if path == "/v1/batches":
                    self._list_batches()
                elif len(parts) == 4 and parts[2] == "batches":
                    batch = server.batches.get(parts[3])
                    with server._lock:
                        fail, server.fail_polls = server.fail_polls > 0, max(
                            0, server.fail_polls - 1)
                    if fail:
                        self._json(500, {"error": {"message": "internal error"}})
                    elif batch is None:
                        self._json(404, _err(f"No batch found with id '{parts[3]}'"))
                    else:
                        self._json(200, server._public(batch))
                elif len(parts) == 5 and parts[2] == "files" and parts[4] == "content":
                    file = server.files.get(parts[3])
                    if file is None:
                        self._json(404, _err(f"No such File object: {parts[3]}"))
                    else:
                        self._send(200, file["content"], content_type="application/octet-stream")
                else:
                    self._json(404, _err("not found"))

            def _list_batches(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                limit = int(query.get("limit", ["20"])[0])
                after = query.get("after", [None])[0]
                with server._lock:
                    newest_first = sorted(server.batches, reverse=True)
                if after in newest_first:
                    newest_first = newest_first[newest_first.index(after) + 1:]
                page = [server._public(server.batches[b]) for b in newest_first[:limit]]
                self._json(200, {"object": "list", "data": page,
                                 "first_id": page[0]["id"] if page else None,
                                 "last_id": page[-1]["id"] if page else None,
                                 "has_more": len(newest_first) > limit})

            def do_POST(self) -> None:
                path = self._route()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = path.split("/")
                if path != "/v1/chat/completions" and self._outage():
                    return
                if path == "/v1/files":
                    self._upload(raw)
                elif path == "/v1/batches":
                    answer = server._create_batch(json.loads(raw or b"{}"))
                    with server._lock:
                        lose, server.lose_creates = server.lose_creates > 0, max(
                            0, server.lose_creates - 1)
                    if lose and answer[0] == 200:
                        server.add_foreign_batches(server.flood_after_lost_create)
                    self._json(*((502, {"error": {"message": "bad gateway"}}) if lose
                                 else answer))
                elif len(parts) == 5 and parts[2] == "batches" and parts[4] == "cancel":
                    self._cancel(parts[3])
                elif path == "/v1/chat/completions":
                    body = json.loads(raw)
                    with server._lock:
                        server.chat_bodies.append(body)
                    status, answer = server.answer(body)
                    if status is None:
                        status, answer = 500, {"error": answer}
                    self._json(status, answer)
                else:
                    self._json(404, _err("not found"))

            def _cancel(self, batch_id: str) -> None:
                batch = server.batches.get(batch_id)
                if batch is None:
                    self._json(404, _err(f"No batch found with id '{batch_id}'"))
                    return
                with server._lock:
                    if batch["status"] in TERMINAL or batch["status"] == "finalizing":
                        code = 400
                    else:
                        code = 200
                        batch.update(status="cancelling", cancelling_at=int(time.time()))
                if code == 400:
                    self._json(400, _err(f"Cannot cancel a batch with status "
                                         f"{batch['status']}"))
                else:
                    self._json(200, server._public(batch))

            def _upload(self, raw: bytes) -> None:
                head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
                msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
                if not msg.is_multipart():
                    self._json(400, _err("expected multipart/form-data"))
                    return
                fields, filename = {}, None
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    fields[name] = part.get_payload(decode=True)
                    if name == "file":
                        filename = part.get_filename()
                if fields.get("purpose") != b"batch" or "file" not in fields:
                    self._json(400, _err("purpose must be 'batch' and a file must be given"))
                    return
                obj = server._store_file(fields["file"], "batch", filename or "upload.jsonl")
                self._json(200, {k: v for k, v in obj.items() if k != "content"})

        return Handler


def _err(message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": None}}
