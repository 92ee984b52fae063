"""A durable, content-addressed cache of LLM answers in sqlite, shared by processes.

LLM calls cost money and minutes, and evolution stages get killed (Ctrl-C, OOM, a DVC
experiment cancelled). Every answer is committed here *before* the caller sees it, so a rerun
after any crash repeats no finished call, and repeating a stage with the same inputs makes no
network calls at all. The key is a hash of everything that determines the answer and
nothing that does not, so the cache survives restarts of the embedded server on a new port:

- in the key: the model identity (embedded: the GGUF's sha256, the server's context size
  ``llm.embedded_n_ctx`` and the llama-cpp-python version; an endpoint: the model name and
  the URL without the scheme), the messages, the sampling parameters as sent (max tokens,
  temperature, top_p, seed, stop) and non-default wire options (``llm.token_limit_param``,
  ``llm.query_params``); see ``Wire.key``;
- not in it: the port, concurrency, retries, timeouts, prices, budgets, the transport
  (online or Batch API) and the server's thread count. sqlite in WAL mode lets
several processes (parallel DVC stages) read and append at once; a busy timeout serialises
their short write transactions.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wizardcoder.errors import ExternalError
from wizardcoder.paths import cache_dir

CACHE_FILE = "llm_requests.sqlite"
# Bump when the key recipe changes so old rows are never matched with a different meaning.
KEY_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model_identity TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    model TEXT,
    created REAL NOT NULL,
    error TEXT
)
"""
# A permanent per-request failure (400 context_length, content_filter...) is cached like an
# answer: `error` holds its class and `text` the server's message, so a rerun does not pay
# for it again. Transient failures (429, 5xx, exhausted retries) are never stored.
ERROR_CLASSES = ("context_length", "content_filter", "bad_request", "retries_exhausted",
                 "empty_content")


def request_key(model_identity: str, messages: Sequence[dict], *, max_tokens: int,
                temperature: float | None, top_p: float | None, seed: int | None,
                stop: str | Sequence[str] | None, options: dict[str, Any] | None = None) -> str:
    """sha256 of the canonical JSON of everything that determines an answer.

    ``options``: wire settings that change what the server is asked beyond sampling (e.g.
    the token-limit parameter's name); left out of the payload when empty, so the keys of
    requests sent the default way are the same as before these settings existed."""
    if isinstance(stop, str):
        stop = [stop]
    payload = {
        "v": KEY_VERSION,
        "model": model_identity,
        "messages": [dict(m) for m in messages],
        "max_tokens": int(max_tokens),
        # 1 and 1.0 must give the same key: YAML and Python disagree on which one they mean.
        "temperature": None if temperature is None else float(temperature),
        "top_p": None if top_p is None else float(top_p),
        "seed": seed,
        "stop": None if stop is None else list(stop),
    }
    if options:
        payload["options"] = dict(options)
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None
    created: float
    error: str | None = None  # one of ERROR_CLASSES: a cached permanent failure, not an answer


class RequestCache:
    """``get``/``put`` by key; one connection per instance, usable from several threads."""

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = 60.0):
        self.path = Path(path) if path is not None else cache_dir() / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # re-entered by put() inside transaction()
        self._in_transaction = False
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so nothing is held
            # open between calls and other processes are never blocked by an idle reader.
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit is on disk before put() returns, also across a power cut;
            # answers cost money, an fsync per answer costs microseconds of LLM time.
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute(_SCHEMA)
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(responses)")}
            if "error" not in columns:  # a cache written before errors were cached
                self._conn.execute("ALTER TABLE responses ADD COLUMN error TEXT")
        except sqlite3.Error as exc:
            raise ExternalError(f"cannot open the LLM request cache {self.path}: {exc}") from exc

    def get(self, key: str) -> CachedResponse | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens, model, created, "
                "error FROM responses WHERE key = ?", (key,)).fetchone()
        return CachedResponse(*row) if row else None

    def lookup(self, key: str, *, resend_errors: bool) -> CachedResponse | None:
        """The entry a request with this key replays instead of being sent: None when there
        is none, or when it is a cached failure and ``resend_errors``
        (llm.resend_cached_errors) asks for such requests to be sent again."""
        hit = self.get(key)
        if hit is not None and hit.error is not None and resend_errors:
            return None
        return hit

    def put(self, key: str, *, model_identity: str, request: dict[str, Any], text: str,
            finish_reason: str | None, prompt_tokens: int | None,
            completion_tokens: int | None, model: str | None,
            error: str | None = None) -> None:
        """Insert and commit; when it returns the answer survives a crash of this process.
        ``error``: the class of a permanent failure (``text`` is then the server's message)."""
        if error is not None and error not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error!r}; expected one of {ERROR_CLASSES}")
        row = (key, model_identity, json.dumps(request, sort_keys=True, ensure_ascii=False),
               text, finish_reason, prompt_tokens, completion_tokens, model, time.time(), error)
        insert = ("INSERT OR REPLACE INTO responses (key, model_identity, request, text, "
                  "finish_reason, prompt_tokens, completion_tokens, model, created, error) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        with self._lock:
            if self._in_transaction:  # committed by transaction() with the others
                self._conn.execute(insert, row)
                return
            # INSERT OR REPLACE: another process may have stored the same answer meanwhile;
            # either copy is a valid answer to the same request.
            with self.transaction():
                self._conn.execute(insert, row)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Many ``put`` calls, one commit (one fsync instead of one per answer): for answers
        that arrive together, e.g. a Batch API output file, where an fsync per line would cost
        minutes at 50,000 lines. All or nothing: a crash inside loses the uncommitted rows,
        which the caller must be able to fetch again (a batch's output stays downloadable)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._in_transaction = True
                yield
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise ExternalError(
                        f"cannot write the LLM request cache {self.path}: {exc}") from exc
                raise
            finally:
                self._in_transaction = False

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute(
                "SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def stats(self) -> dict[str, Any]:
        """Rows, tokens and size per model identity, e.g. for a dry run or MLflow."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT model_identity, COUNT(*), COALESCE(SUM(prompt_tokens), 0), "
                "COALESCE(SUM(completion_tokens), 0) FROM responses "
                "GROUP BY model_identity").fetchall()
        return {
            "path": str(self.path),
            "entries": sum(r[1] for r in rows),
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
            "models": {r[0]: {"entries": r[1], "prompt_tokens": r[2],
                              "completion_tokens": r[3]} for r in rows},
        }

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
