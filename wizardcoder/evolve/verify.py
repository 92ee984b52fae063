"""Execution-verified evolution (``evolve.verify: tests``): an answer is kept only when its
solution passes its own assert-based tests in the scoring sandbox.

The answer step asks for the solution and tests in one answer (``verify_tests: inline``) or
a second call writes the tests for the answer (``separate``). :func:`split_program` finds
the Python code with :mod:`ast` (nothing of it runs on the host): fenced blocks that parse
as Python, or the parseable chunks of an unfenced answer (reusing
:mod:`wizardcoder.sanitize`). Top-level asserts, ``test*`` functions,
``unittest.TestCase`` classes and the body of ``if __name__ == "__main__":`` are the tests;
the rest is the solution.

The solution and its tests never share an interpreter (a wrong solution could otherwise
disarm the tests: an always-equal return value, patched ``unittest`` assertions or
``builtins``). :mod:`~wizardcoder.evolve.verify_relay` starts two sandbox workers under the
`evolve.sandbox` limits and isolation: the *answer's* loads the solution, the *tests'* runs
the tests (and the solution's imports) with stand-ins for the solution's top-level names,
and every use of a stand-in is relayed by the trusted side to the answer's worker as plain
values (:mod:`wizardcoder.evolve.verify_proxy` holds both sides' code; the relay reuses the
scorer's :class:`~wizardcoder.sandbox.harness.Proxy`, so each value crosses the codec's
checks twice). Any exception while loading the solution or running the tests (a failed
assert, an error, ``SystemExit``), a timeout or a crash of either worker fails the attempt.

What the stand-ins support, and what fails instead (docs/evolution.md): calls of the
solution's functions and classes with plain arguments (or the solution's own objects),
returning plain values (what a call changes in a list, dict or set argument is changed in
the tests' object too); the solution's objects (methods, attributes, ``len``, indexing,
iteration, ``str``, its arithmetic, ``==`` between two of its objects); its exceptions,
raised as builtin exceptions or local classes of the same name and builtin base. An object
of the solution is never equal to a plain value, subclasses of builtin types come back as
their builtin value (a namedtuple as a tuple), and passing anything else to the solution (a
lambda, a generator of the tests) raises TypeError in the tests, which fails them.

An answer with no Python code (prose, another language) is the verdict ``no_python``; one
with code but no test, or whose tests fail, is ``failed_tests``. Either is sampled again
(a new seed per attempt, each attempt cached) up to ``evolve.verify_attempts``; a row that
never passes is eliminated and its parent carried, like any failed evolution. What it cannot
check: the tests are the model's own, so a wrong expectation that the wrong solution also
satisfies, or a weak test (``assert f(1) is not None``), passes; ``tests`` per row counts
the assertions so weak verification is visible.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass

from wizardcoder.evolve.verify_relay import Programs, run_all
from wizardcoder.sandbox import SandboxSession
from wizardcoder.sanitize import PYTHON_LANGS, extract_blocks, parseable_code

VERIFY_MODES = ("none", "tests")
TEST_MODES = ("inline", "separate")
_FENCE_LANG = "```"


@dataclass
class Split:
    """The Python code of an answer, split into solution and tests."""

    solution: str
    tests: str
    test_count: int       # assert statements + self.assert* calls in the tests
    test_functions: list[str]
    test_classes: list[str]


def _python_code(answer: str) -> str:
    """Fenced blocks labelled Python (or unlabelled) that parse as Python; without fences the
    parseable chunks of the text. '' when there is none (prose only, another language)."""
    if _FENCE_LANG in answer:
        blocks, langs = extract_blocks(answer), _fence_langs(answer)
        code = [b for b, lang in zip(blocks, langs, strict=False)
                if lang in PYTHON_LANGS and b.strip() and _parses(b)]
        return "\n\n".join(code)
    return parseable_code(answer)


def _fence_langs(text: str) -> list[str]:
    """The language label of each fenced block in extract_blocks' order (Python first)."""
    python, other = [], []
    opened = False
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped.startswith(_FENCE_LANG):
            continue
        if opened:
            opened = False
            continue
        opened = True
        label = stripped[3:].strip().split(" ")[0].lower() if stripped[3:].strip() else ""
        (python if label in PYTHON_LANGS else other).append(label)
    return python + other


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False


def _is_main_guard(node: ast.stmt) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _is_unittest_main(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and ast.unparse(node.value.func).split(".")[-1] == "main")


def _is_test_class(node: ast.stmt) -> bool:
    return isinstance(node, ast.ClassDef) and any(
        ast.unparse(base).split(".")[-1] == "TestCase" for base in node.bases)


def _is_test(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assert) or _is_test_class(node):
        return True
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name.startswith("test")
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return isinstance(func, ast.Name) and func.id.startswith("test")
    return False


def _count_asserts(nodes: list[ast.stmt]) -> int:
    count = 0
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Assert):
                count += 1
            elif (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                  and sub.func.attr.startswith("assert")):
                count += 1
    return count


def split_program(answer: str) -> Split | None:
    """The answer's solution and tests; None when it holds no Python code."""
    code = _python_code(answer)
    if not code.strip():
        return None
    try:
        module = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not module.body:
        return None
    solution, tests = [], []
    for node in module.body:
        if _is_main_guard(node):
            tests.extend(n for n in node.body if not _is_unittest_main(n))
        elif _is_test(node):
            tests.append(node)
        elif _is_unittest_main(node) and "unittest" in ast.unparse(node):
            continue
        else:
            solution.append(node)
    functions = [n.name for n in tests if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    called = {n.value.func.id for n in tests if isinstance(n, ast.Expr)
              and isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)}
    return Split(solution="\n".join(ast.unparse(n) for n in solution),
                 tests="\n".join(ast.unparse(n) for n in tests),
                 test_count=_count_asserts(tests),
                 test_functions=[f for f in functions if f not in called],
                 test_classes=[n.name for n in tests if isinstance(n, ast.ClassDef)])


def tests_only(answer: str) -> Split | None:
    """The tests of a test-writing answer (``verify_tests: separate``): its tests and imports,
    never a definition that could replace the solution's."""
    split = split_program(answer)
    if split is None:
        return None
    module = ast.parse(split.solution) if split.solution else ast.Module(body=[])
    imports = [n for n in module.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    return Split(solution="\n".join(ast.unparse(n) for n in imports), tests=split.tests,
                 test_count=split.test_count, test_functions=split.test_functions,
                 test_classes=split.test_classes)


def _imports(code: str) -> list[str]:
    """The top-level imports of ``code`` (``from __future__`` aside: it only changes how its
    own module compiles)."""
    module = ast.parse(code) if code.strip() else ast.Module(body=[])
    return [ast.unparse(n) for n in module.body if isinstance(n, ast.Import | ast.ImportFrom)
            and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")]


def tests_program(solution: Split, tests: Split) -> str:
    """What the tests' worker runs: the solution's imports (the tests may use them), the
    tests with their own imports, the test functions called, the TestCase classes run (a
    failure raises). The solution's names are stand-ins bound before it runs."""
    parts = _imports(solution.solution)
    if tests is not solution:
        parts += _imports(tests.solution)
    parts += [tests.tests, *(f"{name}()" for name in tests.test_functions)]
    if tests.test_classes:
        names = ", ".join(tests.test_classes)
        # The sandbox refuses reading traceback frames, which unittest does to clear what
        # assertRaises caught and to format a failure: neither is needed for a verdict.
        parts.append(
            "import io as _wc_io, traceback as _wc_traceback, unittest as _wc_unittest\n"
            "_wc_traceback.clear_frames = lambda tb: None\n"
            "_wc_unittest.TestResult._exc_info_to_string = "
            "lambda self, err, test: f'{err[0].__name__}: {err[1]}'\n"
            f"for _wc_case in ({names},):\n"
            "    _wc_result = _wc_unittest.TextTestRunner(stream=_wc_io.StringIO(), "
            "verbosity=0).run(_wc_unittest.defaultTestLoader.loadTestsFromTestCase(_wc_case))\n"
            "    if not _wc_result.wasSuccessful():\n"
            "        raise AssertionError(f'{_wc_case.__name__}: '"
            " f'{len(_wc_result.failures)} failure(s), {len(_wc_result.errors)} error(s): '"
            " f'{(_wc_result.failures + _wc_result.errors)[0][1][:300]}')")
    return "\n\n".join(p for p in parts if p.strip()) + "\n"


@dataclass
class Attempt:
    """One verification attempt of a row: the answer (and tests answer) checked."""

    answer: str
    tests_answer: str | None = None
    kind: str = ""          # passed | no_python | no_tests | a sandbox verdict kind
    detail: str = ""
    tests: str = ""
    test_count: int = 0
    run_s: float = 0.0


def prepare(attempt: Attempt) -> Programs | None:
    """The programs to run for ``attempt``, or None when it is decided without running
    (``attempt.kind`` set: no_python or no_tests)."""
    solution = split_program(attempt.answer)
    if solution is None:
        attempt.kind, attempt.detail = "no_python", "the answer holds no Python code"
        return None
    tests = solution if attempt.tests_answer is None else tests_only(attempt.tests_answer)
    if tests is None or tests.test_count == 0:  # a test function without an assert
        attempt.kind, attempt.detail = "no_tests", "no assert-based test found"  # checks nothing
        return None
    attempt.tests, attempt.test_count = tests.tests, tests.test_count
    if not solution.solution.strip():
        attempt.kind, attempt.detail = "no_tests", "the answer holds tests but no solution"
        return None
    return Programs(solution.solution, tests_program(solution, tests))


def check_attempts(attempts: list[Attempt], limits, workers: int) -> float:
    """Decide every attempt (sandbox runs in parallel); returns the wall time spent."""
    start = time.perf_counter()
    todo = [(a, p) for a in attempts if not a.kind and (p := prepare(a)) is not None]
    for (attempt, _), result in zip(todo, run_all([p for _, p in todo], limits, workers),
                                    strict=True):
        attempt.kind, attempt.detail, attempt.run_s = result.kind, result.detail, \
            round(result.duration_s, 4)
    return time.perf_counter() - start


def final_verdict(attempts: list[Attempt]) -> str:
    """The row's verdict once its attempts are used: pass, or no_python when no attempt
    held Python code, else failed_tests."""
    if attempts and attempts[-1].kind == "passed":
        return "pass"
    return "no_python" if all(a.kind == "no_python" for a in attempts) else "failed_tests"


class Sandbox(SandboxSession):
    """Where answers are verified: the `evolve.sandbox` limits, isolation and workers."""

    def check(self, attempts: list[Attempt]) -> float:
        """Decide the attempts. A run the sandbox itself failed says nothing about the
        answer: up to evolve.sandbox.max_sandbox_errors of them count as failed attempts (sampled
        again), more stop the stage (exit 2, nothing written, the LLM answers cached)."""
        if any(not a.kind for a in attempts):
            self.check_isolation()
        seconds = check_attempts(attempts, self.limits, self.workers)
        self.charge(attempts, lambda failed: (
            f"evolve verify: the sandbox failed to run {self.sandbox_errors} answer(s) "
            f"(evolve.sandbox.max_sandbox_errors = {self.max_sandbox_errors}); first: "
            f"{failed[0].detail}. Nothing was written; the LLM answers are cached, rerun once "
            "it is fixed"))
        return seconds


def verify_calls(config, attempt: int) -> tuple[str, ...]:
    """The LLM calls of verification attempt ``attempt`` besides the answer it checks:
    from the second attempt on, the answer sampled again (a seed of its own); with
    verify_tests: separate, a test-writing call for that answer. ``config``: the
    EvolveConfig (the dry run counts the calls by the same rule)."""
    again = ("answer",) if attempt > 1 else ()
    return again + (("tests",) if config.verify_tests == "separate" else ())


def verify_answers(rnd, send, sandbox: Sandbox) -> float:
    """Verify every row of ``rnd`` (a RoundWork) that survived the answer step; returns the
    sandbox's wall time. ``send(step, rows, requests, desc)`` returns one ChatResult per
    request (the engine's, which counts request failures against the round's limit)."""
    config, seconds = rnd.config, 0.0
    pending = [r for r in rnd.work if not r.failed_rule and r.answer]
    for number in range(1, config.verify_attempts + 1):
        if not pending:
            break
        attempts = {}
        calls = verify_calls(config, number)
        if "answer" in calls:  # a fresh answer: its own seed, cached like any call
            results = send("answer", pending, [rnd.request(r, "answer", number)
                                               for r in pending],
                           f"{rnd.key} verify answer #{number}")
            for row, res in zip(pending, results, strict=True):
                rnd.record("answer", row, res)
                if res.error is not None:
                    row.request_failed("answer", res.error, res.error_message)
                    continue
                row.answer = res.text.strip()
                if res.finish_reason == "length":
                    attempts[id(row)] = Attempt(row.answer, kind="truncated",
                                                detail="the answer hit answer_max_tokens")
            pending = [r for r in pending if not r.failed_rule]
        for row in pending:
            attempts.setdefault(id(row), Attempt(row.answer))
        if "tests" in calls:
            for row in pending:  # no tests call for an answer without Python code
                if not attempts[id(row)].kind and split_program(row.answer) is None:
                    attempts[id(row)].kind = "no_python"
                    attempts[id(row)].detail = "the answer holds no Python code"
            asked = [r for r in pending if not attempts[id(r)].kind]
            results = send("answer", asked, [rnd.request(r, "tests", number, r.answer)
                                             for r in asked],
                           f"{rnd.key} verify tests #{number}")
            for row, res in zip(asked, results, strict=True):
                rnd.record("tests", row, res)
                if res.error is not None:
                    row.request_failed("answer", res.error, res.error_message)
                else:
                    attempts[id(row)].tests_answer = res.text.strip()
            pending = [r for r in pending if not r.failed_rule]
        seconds += sandbox.check([attempts[id(r)] for r in pending])
        for row in pending:
            row.attempts.append(attempts[id(row)])
        pending = [r for r in pending if row_attempt_failed(r)]
    for row in rnd.work:
        if not row.attempts or row.failed_rule:
            continue
        verdict = final_verdict(row.attempts)
        for name in ("no_python", "failed_tests"):
            row.verdicts[name] = "pass" if verdict == "pass" else \
                ("fail" if name == verdict else "skipped")
        if verdict != "pass":
            row.failed_rule = verdict
    return seconds


def row_attempt_failed(row) -> bool:
    return row.attempts[-1].kind != "passed"


def verify_stats(work, seconds: float, sandbox: Sandbox) -> tuple[dict, list[dict]]:
    """The round's verification figures (metrics, MLflow) and one record per verified row
    (attempts, tests, verdict, sandbox run time; the metrics file only, as run times vary)."""
    verified = [r for r in work if r.attempts]
    kept = [r for r in verified if r.attempts[-1].kind == "passed" and not r.failed_rule]
    kept_ids = {id(r) for r in kept}
    runs = [a for r in verified for a in r.attempts if a.run_s]
    kinds: dict[str, int] = {}
    for r in verified:
        for a in r.attempts:
            kinds[a.kind] = kinds.get(a.kind, 0) + 1
    tests = sorted(r.attempts[-1].test_count for r in kept)
    figures = {
        "rows_verified": len(verified),
        "kept": len(kept),
        "verified_rate": round(len(kept) / len(verified), 4) if verified else 0.0,
        "attempts": sum(len(r.attempts) for r in verified),
        "attempts_per_kept": (round(sum(len(r.attempts) for r in kept) / len(kept), 3)
                              if kept else 0.0),
        "eliminated_failed_tests": sum(r.failed_rule == "failed_tests" for r in work),
        "eliminated_no_python": sum(r.failed_rule == "no_python" for r in work),
        "tests_per_kept_mean": round(sum(tests) / len(tests), 3) if tests else 0.0,
        "tests_per_kept_min": tests[0] if tests else 0,
        "kept_with_one_test": sum(t == 1 for t in tests),
        "attempt_kinds": dict(sorted(kinds.items())),
        "sandbox_runs": len(runs),
        "sandbox_errors": sandbox.sandbox_errors,
        "sandbox_s": round(seconds, 3),
        "sandbox_rows_per_s": round(len(runs) / seconds, 2) if seconds else 0.0,
        "isolation": sandbox.isolation or {},
    }
    rows = [{"parent_id": r.parent["id"], "attempts": len(r.attempts),
             "tests": r.attempts[-1].test_count,
             "verdict": "pass" if id(r) in kept_ids else (r.failed_rule or "fail"),
             "kinds": [a.kind for a in r.attempts],
             "run_s": round(sum(a.run_s for a in r.attempts), 4)} for r in verified]
    return figures, rows
