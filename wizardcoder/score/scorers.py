"""Which scorer judges a benchmark: ``SCORERS[Benchmark.scoring]`` (the registry is
:data:`wizardcoder.benchmarks.problems.BENCHMARKS`).

Every scorer has the same shape: ``(benchmark, problems, rows, limits, config, workers,
progress) -> [Verdict]``, one verdict per row, in row order; rows carry ``task_id`` and a
``solution`` (a whole program) or a ``completion`` (the continuation of the prompt).

- ``check``: each task's ``check(candidate)`` on the trusted side against the sandboxed
  program (HumanEval, MBPP, the seed_dev dev set); a problem may add to the program
  (MBPP's ``test_setup_code``: :func:`wizardcoder.benchmarks.problems.harness_job`).
- ``differential``: evalplus's base and plus inputs against reference outputs
  (:mod:`~.plus`; HumanEval+, MBPP+).

A benchmark that is not registered (the dev sets of ``select.dev_benchmark``) is scored by
``check``, the way its problems are written.
"""

from __future__ import annotations

from collections.abc import Callable

from wizardcoder.benchmarks.problems import BENCHMARKS, Benchmark, harness_job
from wizardcoder.errors import ConfigError
from wizardcoder.sandbox.harness import Verdict, evaluate_samples, sample_jobs, sample_program
from wizardcoder.sandbox.pool import SandboxLimits
from wizardcoder.score.config import ScoreConfig
from wizardcoder.score.multipl_e import score_multipl_e


def score_check(benchmark: Benchmark | None, problems: dict[str, dict], rows: list[dict],
                limits: SandboxLimits, config: ScoreConfig, workers: int,
                progress: bool = True) -> list[Verdict]:
    """Each task's ``check`` against each row's program (with what the task adds to it:
    :func:`~wizardcoder.benchmarks.problems.harness_job`)."""
    if not any("program_suffix" in p or "harness_entry_point" in p for p in problems.values()):
        return evaluate_samples(problems, rows, limits, workers=workers, progress=progress)
    harness, samples = {}, []
    for problem, row, _ in sample_jobs(problems, rows):
        harness[problem["task_id"]], program = harness_job(
            problem, sample_program(problem, row.get("completion"), row.get("solution")))
        samples.append({"task_id": problem["task_id"], "solution": program})
    return evaluate_samples(harness, samples, limits, workers=workers, progress=progress)


def score_differential(benchmark: Benchmark | None, problems: dict[str, dict],
                       rows: list[dict], limits: SandboxLimits, config: ScoreConfig,
                       workers: int, progress: bool = True) -> list[Verdict]:
    """evalplus's differential testing on base and plus inputs."""
    from wizardcoder.score.plus import DiffSettings, score_samples

    settings = DiffSettings(config.plus_memory_mb, config.plus_min_time_limit_s,
                            config.plus_time_factor)
    return score_samples(problems, rows, limits, benchmark.evalplus_dataset, settings,
                         workers=workers, progress=progress)


Scorer = Callable[..., list[Verdict]]
SCORERS: dict[str, Scorer] = {"check": score_check, "differential": score_differential,
                               "multipl-e": score_multipl_e}  # compiled/run per language


def score_rows(name: str, problems: dict[str, dict], rows: list[dict], limits: SandboxLimits,
               config: ScoreConfig, progress: bool = True) -> list[Verdict]:
    """Verdicts of ``rows`` on benchmark ``name`` by its registered scorer."""
    benchmark = BENCHMARKS.get(name)
    kind = benchmark.scoring if benchmark else "check"
    if kind not in SCORERS:
        raise ConfigError(f"benchmark {name!r} is scored by {kind!r}, which is not one of "
                          f"the scorers {list(SCORERS)} (wizardcoder/score/scorers.py)")
    return SCORERS[kind](benchmark, problems, rows, limits, config, config.workers, progress)
