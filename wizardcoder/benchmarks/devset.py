"""The held-out dev set that chooses the number of evolution rounds (evol-stop).

The paper picked its round count by looking at HumanEval, the benchmark it reports. Here
the count is chosen on a dev set that is *not* the reported benchmark (section `select`):

- ``seed_dev`` (default, offline): tasks split off the bundled seed set
  (``wizardcoder/resources/dev_tasks.jsonl``), each with the hidden checks the bundled set
  was validated with, in HumanEval's shape (a stub + docstring ``prompt``, an
  ``entry_point``, a ``test`` defining ``check(candidate)``). The merge stage removes these
  tasks, every row evolved from them and any row that overlaps them (``merge.holdout_dev``),
  so they are never trained on.
- ``mbpp+``: MBPP+ through evalplus (needs its data cached or ``MBPP_OVERRIDE_PATH``).
"""

from __future__ import annotations

from importlib import resources

from wizardcoder.jsonl import read_jsonl

DEV_BENCHMARKS = ("seed_dev", "mbpp+")
DEV_RESOURCE = "dev_tasks.jsonl"


def seed_dev_tasks() -> dict[str, dict]:
    """The bundled seed_dev problems, keyed by task id, in file order."""
    resource = resources.files("wizardcoder").joinpath("resources", DEV_RESOURCE)
    with resources.as_file(resource) as path:
        return {row["task_id"]: row for row in read_jsonl(path)}


def dev_problems(benchmark: str, limit: int = 0) -> dict[str, dict]:
    """Problems of a dev benchmark in the shape the generation runner and the scorer use."""
    if benchmark == "seed_dev":
        problems = seed_dev_tasks()
    else:
        from wizardcoder.benchmarks.problems import load_benchmark

        problems = load_benchmark(benchmark)
    return dict(list(problems.items())[:limit]) if limit else problems
