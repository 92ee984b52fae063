"""Scoring MultiPL-E samples (scorer ``multipl-e``): each program (prompt + completion + tests)
compiled and run in the language's sandbox (:mod:`wizardcoder.sandbox.toolchain_run`), judged
by MultiPL-E's own status rules, mapped onto the project's verdict kinds so that pass@k,
the results file, the metrics and MLflow are computed as for every other benchmark:

==============  ============  =================================================
MultiPL-E       verdict kind  meaning
==============  ============  =================================================
OK              passed        compiled (if compiled) and exited 0
Exception       failed        a failed assertion, an exception, a crash
SyntaxError     error         the compiler (or the runtime's parser) refused it
Timeout         timeout       over the step's wall-clock budget
==============  ============  =================================================

The verdict's ``detail`` begins with MultiPL-E's status. A language whose toolchain is not
installed is refused before any sample runs (ToolchainMissing, exit 2, naming the Debian
packages), never scored 0.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from wizardcoder.benchmarks.multipl_e import completion_from_response, program
from wizardcoder.sandbox.harness import Verdict
from wizardcoder.sandbox.toolchain_run import (
    SANDBOX_ERROR,
    ToolchainLimits,
    require_cgroup,
    run_program,
)
from wizardcoder.sandbox.toolchains import require

log = logging.getLogger(__name__)
KIND_OF_STATUS = {"OK": "passed", "Exception": "failed", "SyntaxError": "error",
                  "Timeout": "timeout", SANDBOX_ERROR: "sandbox_error"}


def toolchain_limits(config) -> ToolchainLimits:
    """The compile and run budgets of section `score` (defaults where a config lacks them)."""
    default = ToolchainLimits()
    return ToolchainLimits(**{
        name: getattr(config, f"multipl_e_{name}", getattr(default, name))
        for name in ("compile_timeout_s", "compile_memory_mb", "run_timeout_s",
                     "run_memory_mb", "max_procs")})


def row_program(problem: dict, row: dict) -> str:
    """The file to run for a samples row: a ``completion`` continues the prompt; a
    ``solution`` is the whole function (prompt included); a ``raw`` chat answer is cut down to
    its continuation of the prompt."""
    if row.get("solution") is not None:
        return row["solution"] + "\n" + problem["test"]
    if row.get("completion") is None and row.get("raw") is not None:
        return program(problem, completion_from_response(problem, row["raw"]))
    return program(problem, row.get("completion") or "")


def score_multipl_e(benchmark, problems: dict[str, dict], rows: list[dict], limits,
                    config, workers: int, progress: bool = True) -> list[Verdict]:
    """One verdict per row, in row order (``limits``: the Python sandbox's, unused here; the
    toolchain budgets come from ``config``)."""
    languages = {p["language"] for p in problems.values()}
    for language in sorted(languages):
        require(language)  # refuse before any sample runs
    require_cgroup(getattr(config, "isolation", "strict"))
    budgets = toolchain_limits(config)
    counters: dict[str, int] = {}
    jobs = []
    for row in rows:
        index = row.get("index", counters.get(row["task_id"], 0))
        counters[row["task_id"]] = index + 1
        jobs.append((row["task_id"], index, problems[row["task_id"]], row))

    def judge(job) -> Verdict:
        task_id, index, problem, row = job
        result = run_program(problem["language"], row_program(problem, row), budgets)
        return Verdict(task_id, index, result.status == "OK", KIND_OF_STATUS[result.status],
                       f"{result.status}: {result.detail[-400:]}".strip(),
                       round(result.duration_s, 3))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        verdicts = []
        for i, verdict in enumerate(pool.map(judge, jobs), 1):
            verdicts.append(verdict)
            if progress and i % 50 == 0:
                log.info("multipl-e: %d/%d samples", i, len(jobs))
    return verdicts
