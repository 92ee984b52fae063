"""The durable record of submitted batches, so a killed stage resumes instead of paying twice.

One small sqlite file beside the request cache (same lifetime, same directory): which input
file holds which request keys (and the request bodies, so any line of a resumed batch can be
cached), the batch created from it, and whether it has been collected. Every write commits
with fsync before the call that depends on it proceeds, in the order upload -> record file ->
create batch -> record batch id. It holds ids, hashes and request bodies; never the key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from wizardcoder.errors import ExternalError

STATE_SUFFIX = ".batches.sqlite"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batch_files (
        file_id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        batch_id TEXT,
        status TEXT,
        created REAL NOT NULL,
        finished REAL,
        uploaded_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS batch_requests (
        file_id TEXT NOT NULL,
        key TEXT NOT NULL,
        request TEXT NOT NULL,
        PRIMARY KEY (file_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS batch_requests_key ON batch_requests (key)",
)


def state_path(cache_path: Path) -> Path:
    """Where the batch state of a request cache lives (beside it, same lifetime)."""
    return cache_path.with_name(cache_path.name + STATE_SUFFIX)


class BatchState:
    """Submitted batch files: which keys each holds, its batch id, whether it is done.

    Rows are committed (and fsynced) before the call that depends on them returns, in the
    order upload -> record file -> create batch -> record batch id.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, timeout=60.0, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            for statement in _SCHEMA:
                self._conn.execute(statement)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(batch_files)")}
            if "uploaded_at" not in columns:  # a state file written before the column
                self._conn.execute("ALTER TABLE batch_files ADD COLUMN uploaded_at REAL")
        except sqlite3.Error as exc:
            raise ExternalError(f"cannot open the LLM batch state {path}: {exc}") from exc

    def _write(self, *statements: tuple[str, Sequence]) -> None:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for sql, args in statements:
                    if args and isinstance(args[0], tuple):
                        self._conn.executemany(sql, args)
                    else:
                        self._conn.execute(sql, args)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise ExternalError(f"cannot write the LLM batch state {self.path}: "
                                    f"{exc}") from exc

    def add_file(self, file_id: str, identity: str, requests: dict[str, dict],
                 uploaded_at: float | None = None) -> None:
        """Record an uploaded file: ``identity`` is its model's cache identity, ``requests``
        key -> the request as the cache stores it, ``uploaded_at`` the server's
        ``created_at`` of the file (None: unknown). No batch of this file can be older, so
        a batch whose id was lost is searched for back to that time and no further."""
        rows = tuple((file_id, key, json.dumps(req, sort_keys=True, ensure_ascii=False))
                     for key, req in requests.items())
        self._write(("INSERT INTO batch_files (file_id, identity, created, uploaded_at) "
                     "VALUES (?, ?, ?, ?)", (file_id, identity, time.time(), uploaded_at)),
                    ("INSERT OR REPLACE INTO batch_requests (file_id, key, request) "
                     "VALUES (?, ?, ?)", rows))

    def set_batch(self, file_id: str, batch_id: str) -> None:
        self._write(("UPDATE batch_files SET batch_id = ? WHERE file_id = ?",
                     (batch_id, file_id)))

    def finish(self, file_id: str, status: str) -> None:
        self._write(("UPDATE batch_files SET status = ?, finished = ? WHERE file_id = ?",
                     (status, time.time(), file_id)))

    def unfinished(self) -> dict[str, tuple[str | None, set[str]]]:
        """file_id -> (batch_id or None, keys) of every batch not yet collected. Keys hash the
        model identity (endpoint included), so a shared key means the very same request."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT f.file_id, f.batch_id, r.key FROM batch_files f JOIN batch_requests r "
                "ON r.file_id = f.file_id WHERE f.finished IS NULL").fetchall()
        out: dict[str, tuple[str | None, set[str]]] = {}
        for file_id, batch_id, key in rows:
            out.setdefault(file_id, (batch_id, set()))[1].add(key)
        return out

    def search_from(self, file_id: str, skew_s: float) -> float:
        """The oldest ``created_at`` a batch of ``file_id`` can have: the server's upload
        time, or (not recorded) this machine's record time less ``skew_s`` for clock skew."""
        with self._lock:
            uploaded_at, created = self._conn.execute(
                "SELECT uploaded_at, created FROM batch_files WHERE file_id = ?",
                (file_id,)).fetchone()
        return float(uploaded_at) if uploaded_at is not None else created - skew_s

    def requests(self, file_id: str) -> tuple[str, dict[str, dict]]:
        """(model identity, key -> request) of one file."""
        with self._lock:
            identity = self._conn.execute("SELECT identity FROM batch_files WHERE file_id = ?",
                                          (file_id,)).fetchone()[0]
            rows = self._conn.execute("SELECT key, request FROM batch_requests WHERE file_id = ?",
                                      (file_id,)).fetchall()
        return identity, {key: json.loads(req) for key, req in rows}

    def close(self) -> None:
        with self._lock:
            self._conn.close()
