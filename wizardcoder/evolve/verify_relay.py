"""Running one verification attempt: its solution and its tests in two sandbox workers, every
call of the tests relayed to the solution by the trusted side (see ``verify.py``; both
sides' code is :mod:`wizardcoder.evolve.verify_proxy`, sent as source text).

Each worker runs under the `evolve.sandbox` limits (wall clock, CPU, memory, processes) and
isolation; the relay decodes every reply under its worker's deadline and the codec's budget
(:func:`wizardcoder.sandbox.harness.decode_reply`) and encodes it again for the other side,
so only plain values ever cross, in either direction.
"""

from __future__ import annotations

import ast
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.errors import DataError
from wizardcoder.evolve import verify_proxy
from wizardcoder.sandbox.harness import Proxy, exception_text, load_program, short_detail
from wizardcoder.sandbox.pool import SandboxFailure, SandboxLimits, Worker, drain_spares

_SOURCE = Path(verify_proxy.__file__).read_text()
_COMMON, _REST = _SOURCE.split("# " + "-" * 66 + " the answer's side\n")
_ANSWER_SIDE, _TESTS_SIDE = _REST.split("# " + "-" * 67 + " the tests' side\n")
# Each worker compiles only its own side (~10 ms for the whole file on a busy machine).
ANSWER_SOURCE, TESTS_SOURCE = _COMMON + _ANSWER_SIDE, _COMMON + _TESTS_SIDE
ANSWER_ENTRY, TESTS_ENTRY = "_wc_answer", "_wc_tests"
# The worker runs a program as module "__candidate__", which sys.modules lacks: dataclasses
# (and anything else that looks its class's module up) would fail on an honest answer.
_MODULE_ENTRY = ("import sys as _wc_sys, types as _wc_types\n"
                 "_wc_sys.modules.setdefault(__name__, _wc_types.ModuleType(__name__))\n")


def answer_program(solution: str) -> str:
    """What the answer's worker loads: the solution (its ``from __future__`` imports first),
    registered as a module, then :data:`ANSWER_SOURCE` (its entry point)."""
    body = ast.parse(solution).body if solution.strip() else []
    future = [n for n in body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    rest = [n for n in body if not any(n is f for f in future)]
    return "\n".join([*(ast.unparse(n) for n in future), _MODULE_ENTRY,
                      *(ast.unparse(n) for n in rest), "", ANSWER_SOURCE])


@dataclass(frozen=True)
class Programs:
    """The two programs of one attempt: the solution (the answer's worker loads it with
    :data:`ANSWER_SOURCE` appended) and the tests (run in the tests' worker, whose program
    is :data:`TESTS_SOURCE`)."""

    solution: str
    tests: str


@dataclass
class RunResult:
    kind: str       # a harness verdict kind: passed, error (load failed), timeout, crashed...
    detail: str
    duration_s: float


def _relay(answer: Worker, tests: Worker, programs: Programs) -> tuple[str, str]:
    """Run the tests against the answer, relaying each call; (kind, detail)."""
    error = load_program(answer, answer_program(programs.solution), ANSWER_ENTRY)
    if error is not None:
        return "error", "the solution failed to load: {}: {}".format(*error)
    if load_program(tests, TESTS_SOURCE, TESTS_ENTRY) is not None:
        raise tests.fail("sandbox_error", "the tests' driver failed to load")
    call_answer, call_tests = Proxy(answer, ANSWER_ENTRY), Proxy(tests, TESTS_ENTRY)
    names = call_answer("names")
    if not (type(names) is list and len(names) == 2 and names[0] == "ok"):
        return "error", "the solution's names could not be listed"
    reply = call_tests("start", [names[1], programs.tests])
    while type(reply) is list and len(reply) == 4 and reply[0] == "call" and \
            type(reply[1]) is str and type(reply[2]) is list and type(reply[3]) is dict:
        reply = call_tests("reply", call_answer(*reply[1:]))
    if reply == ["done", True]:
        return "passed", ""
    if type(reply) is list and len(reply) == 4 and reply[:2] == ["done", False] and \
            all(type(v) is str for v in reply[2:]):
        return "error", f"the tests failed: {reply[2]}" + (f": {reply[3]}" if reply[3] else "")
    raise tests.fail("crashed", "malformed reply from the tests' worker")


def run_isolated(programs: Programs, limits: SandboxLimits) -> RunResult:
    """The tests of ``programs`` run against its solution, each in a worker of its own
    (started ahead: callers drain the spares). Never raises for an answer."""
    start = time.perf_counter()
    answer = tests = None
    try:
        with Worker.started(limits) as answer, Worker.started(limits) as tests:
            try:
                kind, detail = _relay(answer, tests, programs)
            except SandboxFailure:
                raise
            except Exception as exc:  # an entry point of ours raised: a side broke it
                kind, detail = "error", f"a worker's entry point raised {exception_text(exc)}"
            for worker in (answer, tests):
                if worker.failure is not None:
                    raise worker.failure
    except SandboxFailure as failure:
        side = "the solution: " if answer is not None and answer.failure is failure else \
            "the tests: " if tests is not None and tests.failure is failure else ""
        kind, detail = failure.kind, side + failure.detail
    except DataError:
        raise
    except Exception as exc:  # the sandbox itself broke (spawn failed, fds exhausted...)
        kind, detail = "sandbox_error", exception_text(exc)
    return RunResult(kind, short_detail(detail), time.perf_counter() - start)


def run_all(programs: list[Programs], limits: SandboxLimits, workers: int) -> list[RunResult]:
    """:func:`run_isolated` for each, ``workers`` at a time; in order."""
    if not programs:
        return []
    try:
        # Two workers per attempt, and spares: well within the sandbox's 64 uid slots.
        with ThreadPoolExecutor(max_workers=max(1, min(workers, 16))) as pool:
            return list(pool.map(lambda p: run_isolated(p, limits), programs))
    finally:
        drain_spares()
