"""MBPP verdicts: this project's `score` vs the plain reference execution, task by task.

    python bench/mbpp_fidelity.py                        # canonical solutions + broken variants
    python bench/mbpp_fidelity.py --samples FILE         # any samples file (see below)
    python bench/mbpp_fidelity.py --samples FILE --only-samples --timeout 10

The reference execution is the one human-eval-style harnesses (bigcode-evaluation-harness,
WizardCoder's MBPP evaluation) use: the program, then the task's ``test_setup_code``, then
its three asserts, ``exec``-ed in one fresh Python interpreter; a sample passes when that
finishes without an exception within ``--timeout`` seconds. Here each such interpreter runs
with rlimits (CPU, 2 GiB address space), in its own session and a temporary directory, and
without network when ``unshare -n`` works (root): containment only, the verdict rule is the
reference's. The project's verdicts come from ``wizardcoder.score.scorers.score_rows``, the
code `wizardcoder score --benchmark mbpp` runs (asserts on the trusted side, the program in
the sandbox).

Samples (default when no --samples): the 500 canonical solutions, and for every task five
deliberately broken variants of its canonical solution: the last ``return`` returns None;
the entry point raises; a syntax error; ``sys.exit(0)`` before the function is defined; and
(the first ``--hang-tasks`` tasks only, as each costs the timeout twice) an endless loop.

``--samples FILE``: JSONL rows ``{"task_id": "Mbpp/11" | 11, "completion" | "solution":
code}`` (human-eval / evalplus style), or a JSON list of lists indexed by task_id - 11 (the
output of WizardCoder's ``src/process_mbpp.py``). Rows of tasks outside MBPP's 500 test
tasks (MBPP+ has a few) are counted and skipped.

Printed: the number of samples, passes by each side, the samples whose verdicts differ (with
both details) and the agreement; per sample file, pass@1 by each side (first sample per task).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wizardcoder.benchmarks.mbpp import load_problems, reference_program  # noqa: E402

MARKER = "__MBPP_REFERENCE_DONE__"
RUNNER = ("import sys\nsource = sys.stdin.read()\n"
          "exec(compile(source, '<mbpp>', 'exec'), {})\n"
          f"print({MARKER!r})\n")
MEMORY_BYTES = 2 << 30


def broken_variants(problem: dict, hang: bool) -> dict[str, str]:
    code, entry = problem["canonical_solution"], problem["entry_point"]
    lines = code.replace("\r\n", "\n").split("\n")
    returns = [i for i, line in enumerate(lines) if re.match(r"\s*return\b", line)]
    variants = {}
    if returns:
        i = returns[-1]
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        variants["returns_none"] = "\n".join([*lines[:i], f"{indent}return None",
                                              *lines[i + 1:]])
    variants["raises"] = f"{code}\n\ndef {entry}(*args, **kwargs):\n    raise ValueError('no')\n"
    variants["syntax_error"] = f"{code}\n\ndef {entry}(:\n    pass\n"
    variants["exits_early"] = f"import sys\nsys.exit(0)\n{code}\n"
    if hang:
        variants["hangs"] = f"def {entry}(*args, **kwargs):\n    while True:\n        pass\n"
    return variants


def read_samples(path: Path, problems: dict[str, dict]) -> tuple[list[dict], int]:
    """(rows {task_id, solution, label}, rows skipped as not MBPP test tasks)."""
    text = path.read_text(encoding="utf-8")
    rows, skipped = [], 0
    if path.suffix == ".json" and text.lstrip().startswith("["):
        for index, completions in enumerate(json.loads(text)):
            for code in completions:
                rows.append({"task_id": f"Mbpp/{index + 11}", "solution": code})
    else:
        for line in text.splitlines():
            if not line.strip():
                continue
            obj = json.loads(line)
            if obj.get("type") == "header":
                continue
            tid = obj["task_id"]
            tid = f"Mbpp/{tid}" if isinstance(tid, int) or str(tid).isdigit() else str(tid)
            codes = obj.get("solution", obj.get("completion"))
            for code in codes if isinstance(codes, list) else [codes]:
                rows.append({"task_id": tid, "solution": code})
    kept = [r for r in rows if r["task_id"] in problems]
    skipped = len(rows) - len(kept)
    for row in kept:
        row["label"] = path.name
    return kept, skipped


def _limits(timeout: float):
    def apply() -> None:
        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    return apply


def reference_verdict(problem: dict, program: str, timeout: float,
                      prefix: list[str]) -> tuple[bool, str]:
    source = reference_program(problem, program)
    with tempfile.TemporaryDirectory(prefix="mbpp-ref-") as cwd:
        proc = subprocess.Popen([*prefix, sys.executable, "-I", "-c", RUNNER], cwd=cwd,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=_limits(timeout))
        try:
            out, err = proc.communicate(source.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.communicate()
            return False, "timeout"
    passed = proc.returncode == 0 and out.decode(errors="replace").rstrip().endswith(MARKER)
    tail = err.decode(errors="replace").strip().splitlines()
    return passed, (tail[-1] if tail else f"exit {proc.returncode}")[:200]


def network_off_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    print("note: `unshare -n` is unavailable: the reference runs keep the network")
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", action="append", default=[], type=Path,
                        help="a samples file (repeatable)")
    parser.add_argument("--only-samples", action="store_true",
                        help="skip the canonical solutions and broken variants")
    parser.add_argument("--hang-tasks", type=int, default=5,
                        help="tasks that also get an endless-loop variant (default 5)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds per sample on both sides (score.timeout_s, cpu_s)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from wizardcoder.sandbox import SandboxSession
    from wizardcoder.score.config import ScoreConfig
    from wizardcoder.score.scorers import score_rows

    problems = load_problems()
    rows: list[dict] = []
    if not args.only_samples:
        for i, (tid, problem) in enumerate(problems.items()):
            rows.append({"task_id": tid, "solution": problem["canonical_solution"],
                         "label": "canonical"})
            for kind, code in broken_variants(problem, i < args.hang_tasks).items():
                rows.append({"task_id": tid, "solution": code, "label": f"broken:{kind}"})
    for path in args.samples:
        kept, skipped = read_samples(path, problems)
        print(f"{path}: {len(kept)} samples of MBPP test tasks, {skipped} of other tasks "
              "skipped")
        rows += kept
    if not rows:
        sys.exit("nothing to score")

    config = ScoreConfig(timeout_s=args.timeout, cpu_s=args.timeout, workers=args.workers)
    session = SandboxSession.from_config(config)
    print("sandbox:", session.check_isolation())
    start = time.perf_counter()
    ours = score_rows("mbpp", problems, [{"task_id": r["task_id"], "solution": r["solution"]}
                                         for r in rows], session.limits, config,
                      progress=False)
    ours_s = time.perf_counter() - start
    prefix = network_off_prefix()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        theirs = list(pool.map(lambda r: reference_verdict(problems[r["task_id"]],
                                                           r["solution"], args.timeout,
                                                           prefix), rows))
    ref_s = time.perf_counter() - start

    labels = list(dict.fromkeys(r["label"] for r in rows))
    print(f"\n{len(rows)} samples; project {ours_s:.1f} s ({len(rows) / ours_s:.1f}/s), "
          f"reference {ref_s:.1f} s ({len(rows) / ref_s:.1f}/s)")
    print(f"{'samples':<28} {'n':>5} {'project pass':>12} {'reference pass':>14} "
          f"{'differ':>6}")
    differ_all = []
    for label in labels:
        idx = [i for i, r in enumerate(rows) if r["label"] == label]
        differ = [i for i in idx if ours[i].passed != theirs[i][0]]
        differ_all += differ
        print(f"{label:<28} {len(idx):>5} {sum(ours[i].passed for i in idx):>12} "
              f"{sum(theirs[i][0] for i in idx):>14} {len(differ):>6}")
        if not label.startswith(("canonical", "broken:")):
            first = {}
            for i in idx:
                first.setdefault(rows[i]["task_id"], i)
            tasks = len(first)
            print(f"  pass@1 over its {tasks} tasks (first sample each): project "
                  f"{100 * sum(ours[i].passed for i in first.values()) / tasks:.1f}, "
                  f"reference {100 * sum(theirs[i][0] for i in first.values()) / tasks:.1f}")
    for i in differ_all:
        print(f"DIFFER {rows[i]['label']} {rows[i]['task_id']}: project {ours[i].kind} "
              f"({ours[i].detail[:150]}), reference {'pass' if theirs[i][0] else 'fail'} "
              f"({theirs[i][1]})")
    same = len(rows) - len(differ_all)
    print(f"\nagreement: {same}/{len(rows)} samples ({100 * same / len(rows):.2f}%)")


if __name__ == "__main__":
    main()
