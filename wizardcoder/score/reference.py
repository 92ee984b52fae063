"""Reference outputs for differential tests (HumanEval+, MBPP+), computed in the sandbox.

Like evalplus's ``get_groundtruth``, the expected output of every base and plus input is what the
task's canonical solution (``prompt + canonical_solution``) returns for it, timed per input (the
candidate's per-input time limit derives from it). The canonical solution is benchmark text, but
it runs in the same sandbox as candidates all the same, one worker per input set, fed every input
in one message and answering one frame per input (see ``worker._answer``).

Results are kept in memory and in ``.cache/wizardcoder/scoring/expected_outputs.sqlite`` (a
directory only the scorer's uid can read) under a hash of everything that determines them (the
task's prompt, canonical solution, entry point and inputs, the dataset's oracle rules,
:data:`FORMAT`), so a changed dataset file never reuses stale answers, and a subset of tasks
reuses the entries of the full run. A set where the canonical solution
timed out or crashed is not cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.errors import DataError
from wizardcoder.paths import cache_dir
from wizardcoder.sandbox.codec import ProtocolError, decode_value, encode_value
from wizardcoder.sandbox.harness import load_program
from wizardcoder.sandbox.pool import SandboxFailure, SandboxLimits, Worker
from wizardcoder.score.oracle import is_floats, not_none_mode

log = logging.getLogger(__name__)

FORMAT = 1  # bump when how references are computed changes: old cache rows are never matched
CACHE_FILE = "expected_outputs.sqlite"
SETS = ("base", "plus")
CANONICAL_TIMEOUT_S = 1800.0  # trusted code: the limit only catches a broken dataset
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Reference:
    """The reference outputs of one input set. Per input ``kinds[i]`` is ``"v"`` (``texts[i]``
    is the output's encoding as the worker sends it), ``"d"`` (``texts[i]`` is the SHA-256 of
    an output too large to send, see ``codec.digest_value``) or ``"skip"`` (the canonical
    solution raised or returned something unsendable: evalplus would crash; the input is not
    scored, ``texts[i]`` says why) or ``"sandbox_error"`` (the sandbox failed: no sample can be
    judged on this set). ``floats[i]``: the output is a float (list), which makes
    evalplus compare with a tolerance from then on."""

    kinds: tuple[str, ...]
    texts: tuple[str, ...]
    seconds: tuple[float, ...]
    floats: tuple[bool, ...]
    complete: bool = True  # False: some input skipped after a timeout or crash (not cached)
    _values: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def frame(self, i: int) -> bytes | None:
        """The exact reply frame of a worker returning the reference output (fast path)."""
        return f'{{"ok":{self.texts[i]}}}'.encode() if self.kinds[i] == "v" else None

    def value(self, i: int):
        if i not in self._values:
            self._values[i] = decode_value(json.loads(self.texts[i]))
        return self._values[i]

    def as_json(self) -> list:
        return [list(self.kinds), list(self.texts), list(self.seconds), list(self.floats)]

    @classmethod
    def from_json(cls, data: list) -> Reference:
        kinds, texts, seconds, floats = data
        return cls(tuple(kinds), tuple(texts), tuple(seconds), tuple(floats))


def run_message(inputs: list, not_none: str | None) -> str:
    """The encoded request to call the entry point on every input."""
    return encode_value({"run": [list(i) for i in inputs], "not_none": not_none}, 1 << 31)


def _stable(value):
    """A JSON-able form of an input that does not depend on set iteration order."""
    t = type(value)
    if t is list or t is tuple:
        return [t.__name__, [_stable(v) for v in value]]
    if t is set or t is frozenset:
        return [t.__name__, sorted(json.dumps(_stable(v)) for v in value)]
    if t is dict:
        return ["dict", [[_stable(k), _stable(v)] for k, v in value.items()]]
    if t is int and abs(value) >= 1 << 62:
        return ["int", hex(value)]
    if t in (float, complex, bytes):
        return [t.__name__, repr(value)]
    return value


def task_key(problem: dict, dataset: str, messages: dict[str, str]) -> str:
    digest = hashlib.sha256(json.dumps([
        FORMAT, dataset, problem["task_id"], problem["entry_point"], problem["prompt"],
        problem["canonical_solution"], problem.get("atol", 0)]).encode())
    for which in SETS:
        text = messages[which]
        if '"$":"set"' in text or '"$":"frozenset"' in text:  # order varies between processes
            text = json.dumps(_stable(problem[f"{which}_input"]))
        digest.update(f"\0{which}\0".encode() + text.encode())
    return digest.hexdigest()


def stream_replies(worker: Worker, message: str, count: int,
                   limits_s: list[float] | None = None) -> Iterator[tuple[int, bytes, float]]:
    """Send a run request; yield (input index, raw reply frame, seconds since the previous
    reply) for each input. ``limits_s[i]`` bounds input i's time; past it the worker is
    stopped (SandboxFailure ``timeout``)."""
    worker.send(message)
    if worker.recv() != {"started": True}:
        raise worker.fail("crashed", "malformed reply to a run request")
    previous = time.monotonic()
    for i in range(count):
        deadline = None if limits_s is None else previous + limits_s[i]
        label = "" if limits_s is None else \
            f"input {i + 1}/{count} ran past its time limit of {limits_s[i]:.3g} s"
        frame = worker.recv_raw(deadline, label)
        now = time.monotonic()
        yield i, frame, now - previous
        previous = now


def _reference_set(problem: dict, inputs: list, not_none: str | None,
                   limits: SandboxLimits) -> Reference:
    program = problem["prompt"] + problem["canonical_solution"]
    kinds: list[str] = []
    texts: list[str] = []
    seconds: list[float] = []
    floats: list[bool] = []
    complete = True
    while len(kinds) < len(inputs):  # a fresh worker after an input that killed the last one
        start = len(kinds)
        try:
            with Worker(limits) as worker:
                error = load_program(worker, program, problem["entry_point"])
                if error is not None:
                    raise DataError("<benchmark>", None, "canonical_solution",
                                    f"{problem['task_id']}: the canonical solution does not "
                                    "load: {}: {}".format(*error))
                message = run_message(inputs[start:], not_none)
                for _, frame, took in stream_replies(worker, message, len(inputs) - start):
                    kind, text, value = _parse(worker, frame)
                    kinds.append(kind)
                    texts.append(text)
                    seconds.append(took)
                    floats.append(kind == "v" and is_floats(value))
        except DataError:
            raise
        except (SandboxFailure, Exception) as failure:
            complete = False
            if not isinstance(failure, SandboxFailure) or failure.kind == "sandbox_error":
                # The sandbox is broken, not the canonical solution: no input of the set can
                # be judged (a skipped input would pass every sample: never that).
                why = f"{type(failure).__name__}: {failure}"[:300]
                rest = len(inputs) - len(kinds)
                kinds += ["sandbox_error"] * rest
                texts += [why] * rest
                seconds += [0.0] * rest
                floats += [False] * rest
                break
            kinds.append("skip")
            texts.append(f"{failure.kind}: {failure.detail}"[:300])
            seconds.append(0.0)
            floats.append(False)
    skipped = [i for i, k in enumerate(kinds) if k == "skip"]
    if skipped:
        log.warning("%s: the canonical solution failed on %d of %d inputs (not scored; first: "
                    "input %d, %s)", problem["task_id"], len(skipped), len(inputs),
                    skipped[0] + 1, texts[skipped[0]])
    return Reference(tuple(kinds), tuple(texts), tuple(seconds), tuple(floats), complete)


def _parse(worker: Worker, frame: bytes) -> tuple[str, str, object]:
    (key, value), = worker.parse(frame).items()
    if key == "ok":
        try:  # keep the worker's own text (the fast path compares frames), once it is valid
            decoded = decode_value(value)
        except ProtocolError as exc:
            raise worker.fail("crashed", f"malformed reply: {exc}") from None
        text = None
        if frame.startswith(b'{"ok":') and frame.endswith(b"}"):
            try:
                text = frame[6:-1].decode("utf-8")
            except UnicodeDecodeError:
                pass
        return "v", text if text is not None else encode_value(decoded, 1 << 31), decoded
    if key == "digest" and isinstance(value, str) and len(value) == 64 and set(value) <= _HEX:
        return "d", value, None
    if key == "exc" and isinstance(value, list) and len(value) == 3:
        return "skip", f"raised {str(value[0])[:100]}: {str(value[1])[:200]}", None
    if key == "unserializable" and isinstance(value, str):
        return "skip", f"unsendable output: {value[:200]}", None
    raise worker.fail("crashed", f"unexpected reply {key[:50]!r}")


class _Store:
    """sqlite rows key -> zlib-compressed JSON of the task's references."""

    def __init__(self, path: Path):
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        with self.lock, self.conn:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("CREATE TABLE IF NOT EXISTS refs (key TEXT PRIMARY KEY, "
                              "data BLOB NOT NULL, created REAL NOT NULL)")

    def get(self, key: str) -> dict[str, Reference] | None:
        with self.lock:
            row = self.conn.execute("SELECT data FROM refs WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(zlib.decompress(row[0]))
            return {which: Reference.from_json(data[which]) for which in SETS}
        except (zlib.error, ValueError, KeyError, TypeError):
            return None  # a damaged row is recomputed and replaced

    def put(self, key: str, refs: dict[str, Reference]) -> None:
        data = zlib.compress(json.dumps({w: refs[w].as_json() for w in SETS}).encode(), 1)
        with self.lock, self.conn:
            self.conn.execute("INSERT OR REPLACE INTO refs VALUES (?, ?, ?)",
                              (key, data, time.time()))

    def close(self) -> None:
        self.conn.close()


def _store_dir() -> Path:
    """``.cache/wizardcoder/scoring``, mode 0700: the expected outputs are the answers, and a
    sandboxed sample runs as another uid (the cache may live in a directory the sandbox does
    not hide, such as /tmp)."""
    path = cache_dir() / "scoring"
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


_memory: dict[str, dict[str, Reference]] = {}
_memory_lock = threading.Lock()


def references(problems: dict[str, dict], dataset: str, limits: SandboxLimits,
               workers: int = 2, progress: bool = False, use_cache: bool = True,
               ) -> tuple[dict[str, dict[str, Reference]], dict[str, dict[str, str]]]:
    """({task_id: {"base"|"plus": Reference}}, {task_id: {"base"|"plus": the run message for
    candidates}}) for the given evalplus problems, from memory, the disk cache or the
    sandbox."""
    from tqdm import tqdm

    messages, keys = {}, {}
    for task_id, problem in problems.items():  # the messages that candidates get
        mode = "non_bool" if not_none_mode(dataset, problem["entry_point"]) else None
        messages[task_id] = {w: run_message(problem[f"{w}_input"], mode) for w in SETS}
        keys[task_id] = task_key(problem, dataset, messages[task_id])
    found: dict[str, dict[str, Reference]] = {}
    store = _Store(_store_dir() / CACHE_FILE) if use_cache else None
    try:
        for task_id, key in keys.items():
            with _memory_lock:
                hit = _memory.get(key) if use_cache else None
            if hit is None and store is not None and (hit := store.get(key)) is not None:
                with _memory_lock:
                    _memory[key] = hit
            if hit is not None:
                found[task_id] = hit
        todo = [t for t in problems if t not in found]
        ref_limits = dataclasses.replace(limits, timeout_s=CANONICAL_TIMEOUT_S,
                                         cpu_s=CANONICAL_TIMEOUT_S)

        def compute(task_id: str) -> None:
            problem = problems[task_id]
            mode = "all" if not_none_mode(dataset, problem["entry_point"]) else None
            refs = {w: _reference_set(problem, problem[f"{w}_input"], mode, ref_limits)
                    for w in SETS}
            found[task_id] = refs
            if use_cache and all(r.complete for r in refs.values()):
                with _memory_lock:
                    _memory[keys[task_id]] = refs
                store.put(keys[task_id], refs)

        if todo:
            log.info("computing reference outputs of %d tasks in the sandbox", len(todo))
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
                    tqdm(total=len(todo), disable=not progress, desc="reference outputs",
                         unit="task") as bar:
                for future in as_completed([pool.submit(compute, t) for t in todo]):
                    future.result()
                    bar.update(1)
    finally:
        if store is not None:
            store.close()
    return {t: found[t] for t in problems}, messages
