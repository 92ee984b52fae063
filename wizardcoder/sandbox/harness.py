"""Trusted side of the scorer: runs the benchmark's own ``check`` against a sandboxed candidate.

Threat model: see :mod:`wizardcoder.sandbox.pool`. The verdict is decided here, in an
interpreter the candidate never runs in. The namespace is built from the benchmark's trusted text
only (``exec(problem["prompt"] + "\\n" + problem["test"])``: prompts define the stub and helpers
such as ``poly`` that ``check`` uses), and ``check`` receives a proxy that forwards each call to
the worker and returns the decoded reply: plain builtin values only, compared by this
interpreter's own ``==``. ``check`` returning normally, with no sandbox failure on the way, is the
only way to pass. The ``problem`` dict must come from the benchmark, never from a model.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import reprlib
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from wizardcoder.errors import DataError
from wizardcoder.sandbox.codec import (
    DecodeTimeout,
    OverBudget,
    ProtocolError,
    Unserializable,
    decode_value,
)
from wizardcoder.sandbox.pool import (
    SandboxFailure,
    SandboxLimits,
    Worker,
    drain_spares,
)

DETAIL_CHARS = 500
# judge_error: the trusted side raised while judging this sample's reply (a scorer bug or an
# output nobody foresaw): that sample's verdict, never the run's end. sandbox_error: the sandbox
# itself failed (a worker that could not start...): no verdict on the model at all.
KINDS = ("passed", "failed", "error", "timeout", "crashed", "unserializable", "judge_error",
         "sandbox_error")
# Exceptions that trusted code treats as control flow: a candidate raising StopIteration inside
# ``for r in map(candidate, xs)`` would end the loop early and skip every assertion.
_NOT_REBUILT = frozenset({"StopIteration", "StopAsyncIteration"})


@dataclass
class Verdict:
    """One sample's result. For HumanEval+ / MBPP+ ``passed``/``kind``/``detail`` are the base
    tests' and ``plus_*`` the plus tests' (each set judged on its own); elsewhere the plus
    fields are None."""

    task_id: str
    sample_index: int
    passed: bool
    kind: str          # one of KINDS
    detail: str        # short excerpt: assertion message / exception / output tail
    duration_s: float
    plus_passed: bool | None = None
    plus_kind: str | None = None
    plus_detail: str | None = None


class _BoundedRepr(reprlib.Repr):
    def repr_int(self, x, level):
        if x.bit_length() > 10_000:  # str() of an int above 4,300 digits raises ValueError
            return f"<int of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 80
_REPR.maxlevel = 4


def show(value, limit: int = 120) -> str:
    """A short repr of a decoded value for a failure detail: bounded in time and length, and
    never raising (a huge int, a deep or giant structure)."""
    try:
        text = _REPR.repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__} that cannot be shown: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def exception_text(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception, bounded and never raising (a message may format a
    huge int)."""
    try:
        message = str(exc)
    except Exception as inner:
        message = f"<message that cannot be shown: {type(inner).__name__}>"
    text = type(exc).__name__ + (f": {message}" if message else "")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def decode_reply(worker: Worker, value):
    """A reply's value decoded under the sample's deadline and the codec's element budget;
    a forged or too costly value fails the sample."""
    try:
        return decode_value(value, worker.deadline)
    except DecodeTimeout as exc:
        raise worker.fail("timeout", str(exc)) from None
    except OverBudget as exc:
        raise worker.fail("unserializable", f"reply refused: {exc}") from None
    except ProtocolError as exc:
        raise worker.fail("crashed", f"malformed reply: {exc}") from None
    except RecursionError:
        raise worker.fail("crashed", "malformed reply: nested too deeply") from None


class CandidateError(Exception):
    """A non-builtin exception raised by the candidate (its type cannot be rebuilt here)."""


def _rebuild(name: str, message: str, builtin: bool) -> Exception:
    cls = getattr(builtins, name, None) if builtin else None
    if isinstance(cls, type) and issubclass(cls, Exception) and name not in _NOT_REBUILT:
        try:
            return cls(message)
        except Exception:  # e.g. UnicodeDecodeError needs five arguments
            pass
    return CandidateError(f"{name}: {message}" if message else name)


def load_program(worker: Worker, program: str, entry_point: str) -> tuple[str, str] | None:
    """Send the program; None once loaded, else the (type, message) of what failed."""
    worker.send({"program": program, "entry": entry_point})  # read once the worker is ready
    if worker.recv() != {"ready": True}:
        raise worker.fail("sandbox_error", "the worker did not start properly")
    worker.ready = True
    (key, value), = worker.recv().items()
    try:
        err = decode_value(value, worker.deadline)
    except ProtocolError:  # forged, or too costly to decode
        err = None
    if key == "loaded" and err is True:
        return None
    if key == "load_error" and isinstance(err, list) and len(err) == 3 and \
            all(type(e) is str for e in err[:2]):
        return err[0], err[1]
    raise worker.fail("crashed", "malformed reply while loading the program")


class Proxy:
    """What ``check`` receives as ``candidate``: each call goes to the worker; the reply is a
    plain value, or a rebuilt exception that is raised here. Evolve's isolated verification
    relays calls between two workers through two of these."""

    def __init__(self, worker: Worker, name: str):
        self._worker = worker
        self.__name__ = self.__qualname__ = name
        self.raised: list[BaseException] = []  # identity tells candidate errors from check's

    def __call__(self, *args, **kwargs):
        worker = self._worker
        if worker.failure is not None:
            raise worker.failure
        try:
            worker.send({"call": [args, kwargs]})  # encoded: the worker gets deep copies
        except Unserializable as exc:
            raise worker.fail("sandbox_error", f"cannot send the arguments: {exc}") from None
        (key, value), = worker.recv().items()
        value = decode_reply(worker, value)
        if key == "ok":
            return value
        if key == "exc" and isinstance(value, list) and len(value) == 3 and \
                [type(v) for v in value] == [str, str, bool]:
            exc = _rebuild(*value)
            self.raised.append(exc)
            raise exc
        if key == "unserializable" and isinstance(value, str):
            raise worker.fail("unserializable", value[:300])
        raise worker.fail("crashed", f"unexpected reply {key[:50]!r}")

    def __repr__(self) -> str:
        return f"<sandboxed {self.__name__}>"


@functools.lru_cache(maxsize=1024)
def _compile_check(task_id: str, prompt: str, test: str):
    source = prompt + "\n" + test
    filename = f"<check {task_id} {hashlib.sha1(source.encode()).hexdigest()[:8]}>"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise DataError("<problems>", None, "test",
                        f"{task_id}: test does not compile: {exc}") from None
    return code, filename, source.splitlines()


def short_detail(text: str) -> str:
    """``text`` on one line, cut to DETAIL_CHARS: a verdict's detail."""
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_CHARS else text[:DETAIL_CHARS - 3] + "..."


def _describe_failure(exc: BaseException, filename: str, lines: list[str]) -> str:
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename and frame.lineno and frame.lineno <= len(lines):
            where = f"check line {frame.lineno}: {lines[frame.lineno - 1].strip()}"
            break
    head = exception_text(exc, DETAIL_CHARS)  # check's message may format a huge int
    return short_detail(f"{head} ({where})" if where else head)


def _problem_fields(problem: dict) -> tuple[str, str, str, str]:
    try:
        fields = tuple(problem[k] for k in ("task_id", "prompt", "entry_point", "test"))
    except (KeyError, TypeError) as exc:
        raise DataError("<problems>", None, str(exc), "problem lacks a field") from None
    if not all(isinstance(f, str) for f in fields):
        raise DataError("<problems>", None, None, f"{fields[0]}: fields must be strings")
    return fields  # type: ignore[return-value]


def run_check(problem: dict, program: str, limits: SandboxLimits, sample_index: int = 0,
              audit_hook: bool = True, spare: bool = False) -> Verdict:
    """Score one full candidate program. ``audit_hook=False`` exists only so that tests can
    check the OS layers on their own; ``spare``: take a worker started ahead
    (``Worker.started``; the caller drains the spares afterwards)."""
    start = time.perf_counter()
    task_id, prompt, entry_point, test = _problem_fields(problem)
    code, filename, lines = _compile_check(task_id, prompt, test)

    def verdict(kind: str, detail: str = "") -> Verdict:
        return Verdict(task_id, sample_index, kind == "passed", kind, short_detail(detail),
                       time.perf_counter() - start)

    if not isinstance(program, str):
        return verdict("error", "the sample's program is not a string")
    try:
        with Worker.started(limits, audit_hook) if spare else \
                Worker(limits, audit_hook=audit_hook) as worker:
            load_error = load_program(worker, program, entry_point)
            if load_error is not None:
                return verdict("error", "program failed to load: {}: {}".format(*load_error))
            namespace: dict = {"__name__": f"__check_{task_id}__"}
            exec(code, namespace)  # trusted benchmark text only
            check = namespace.get("check")
            if not callable(check):
                raise DataError("<problems>", None, "test", f"{task_id}: no check() defined")
            proxy = Proxy(worker, entry_point)
            # Some checks call the function by name (HumanEval/33 compares against
            # sort_third(...)): like the reference harness, that name means the candidate.
            namespace[entry_point] = proxy
            try:
                check(proxy)
                outcome = verdict("passed")
            except SandboxFailure:
                raise
            except AssertionError as exc:
                kind = "error" if any(exc is e for e in proxy.raised) else "failed"
                outcome = verdict(kind, _describe_failure(exc, filename, lines))
            except Exception as exc:
                outcome = verdict("error", _describe_failure(exc, filename, lines))
            if worker.failure is not None:  # check swallowed it (a bare except)
                raise worker.failure
            if outcome.passed and time.monotonic() > worker.deadline:  # judging is timed too
                raise worker.fail("timeout", "judging the replies ran past the wall-clock "
                                             f"limit of {limits.timeout_s:g} s")
            return outcome
    except SandboxFailure as failure:
        return verdict(failure.kind, failure.detail)
    except DataError:
        raise
    except Exception as exc:  # the sandbox itself broke (spawn failed, fds exhausted...)
        return verdict("sandbox_error", exception_text(exc))


def sample_program(problem: dict, completion: str | None, solution: str | None) -> str:
    """The program a sample stands for: its full ``solution`` program, else the problem's
    prompt followed by its ``completion``."""
    if solution is not None:
        return solution
    if completion is None:
        raise DataError("<samples>", None, "completion", "needs a completion or a solution")
    return _problem_fields(problem)[1] + completion if isinstance(completion, str) \
        else completion


def check_sample(problem: dict, completion: str | None, limits: SandboxLimits,
                 solution: str | None = None, sample_index: int = 0,
                 spare: bool = False) -> Verdict:
    """Score one sample: ``prompt + completion``, or a full ``solution`` program."""
    program = sample_program(problem, completion, solution)
    return run_check(problem, program, limits, sample_index, spare=spare)


def sample_jobs(problems: dict[str, dict], samples: list[dict]) -> list[tuple[dict, dict, int]]:
    """[(problem, sample, index among its task's samples)]; an unknown task or a sample with
    no code is a DataError (callers that read a file check earlier, naming its lines)."""
    jobs = []
    seen: Counter[str] = Counter()
    for position, sample in enumerate(samples, start=1):
        task_id = sample.get("task_id") if isinstance(sample, dict) else None
        if task_id not in problems:
            raise DataError("<samples>", position, "task_id",
                            f"unknown task_id {task_id!r} (not in the benchmark)")
        if sample.get("solution") is None and sample.get("completion") is None:
            raise DataError("<samples>", position, "completion",
                            "needs a 'completion' or a 'solution'")
        jobs.append((problems[task_id], sample, seen[task_id]))
        seen[task_id] += 1
    return jobs


def evaluate_samples(problems: dict[str, dict], samples: list[dict], limits: SandboxLimits,
                     workers: int = 2, progress: bool = True) -> list[Verdict]:
    """Run each problem's ``check`` against its samples in parallel; verdicts come back in
    sample order."""
    jobs = sample_jobs(problems, samples)
    results: list[Verdict | None] = [None] * len(jobs)
    from tqdm import tqdm

    passed = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, 64))) as pool, \
                tqdm(total=len(jobs), disable=not progress, desc="scoring", unit="sample") as bar:
            futures = {pool.submit(check_sample, problem, sample.get("completion"), limits,
                                   sample.get("solution"), index, True): i
                       for i, (problem, sample, index) in enumerate(jobs)}
            for future in as_completed(futures):
                result = future.result()
                results[futures[future]] = result
                passed += result.passed
                bar.update(1)
                bar.set_postfix(passed=passed, refresh=False)
    finally:
        drain_spares()
    return results  # type: ignore[return-value]


def kinds_summary(verdicts: Sequence[Verdict]) -> dict[str, int]:
    """Count of verdicts per kind (all kinds present, zero when absent)."""
    counts = Counter(v.kind for v in verdicts)
    return {kind: counts.get(kind, 0) for kind in KINDS}
