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

import ast
import textwrap
from importlib import resources

from wizardcoder.jsonl import read_jsonl
from wizardcoder.seed.seeds import row_id

DEV_BENCHMARKS = ("seed_dev", "mbpp+")
DEV_RESOURCE = "dev_tasks.jsonl"
DEV_PREFIX = "SeedDev/"


def seed_dev_tasks() -> dict[str, dict]:
    """The bundled seed_dev problems, keyed by task id, in file order."""
    resource = resources.files("wizardcoder").joinpath("resources", DEV_RESOURCE)
    with resources.as_file(resource) as path:
        return {row["task_id"]: row for row in read_jsonl(path)}


def holdout() -> tuple[set[str], dict[str, str]]:
    """(seed ids never to train on, {task_id: prompt text} to decontaminate against)."""
    tasks = seed_dev_tasks()
    return ({t["seed_id"] for t in tasks.values()},
            {tid: t["prompt"] + t["canonical_solution"] for tid, t in tasks.items()})


def dev_problems(benchmark: str, limit: int = 0) -> dict[str, dict]:
    """Problems of a dev benchmark in the shape the generation runner and the scorer use."""
    if benchmark == "seed_dev":
        problems = seed_dev_tasks()
    else:
        from wizardcoder.benchmarks.problems import load_benchmark

        problems = load_benchmark(benchmark)
    return dict(list(problems.items())[:limit]) if limit else problems


def build_dev_task(index: int, row: dict, check_code: str) -> dict:
    """A HumanEval-shaped problem from bundled seed row ``index`` and its reference checks.

    The prompt is the solution's imports, the entry point's signature and the instruction as
    its docstring; ``canonical_solution`` is the seed's own answer (a whole program).
    """
    tree = ast.parse(row["output"])
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(funcs) != 1 or row.get("input"):
        raise ValueError(f"seed row {index}: a dev task needs one function and no input")
    func = funcs[0]
    lines = row["output"].splitlines()
    imports = [ast.get_source_segment(row["output"], n) for n in tree.body
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    signature = "\n".join(lines[func.lineno - 1: func.body[0].lineno - 1])
    text = row["instruction"].replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    doc = textwrap.fill(text, width=88, initial_indent="    ", subsequent_indent="    ",
                        break_on_hyphens=False)
    prompt = "".join(f"{i}\n" for i in imports) + ("\n\n" if imports else "")
    prompt += f'{signature}\n    """\n{doc}\n    """\n'
    test = "def check(candidate):\n" + textwrap.indent(textwrap.dedent(check_code).strip(),
                                                     "    ") + "\n"
    return {"task_id": f"{DEV_PREFIX}{index}", "seed_index": index,
            "seed_id": row_id(row["instruction"], row.get("input", "")),
            "instruction": row["instruction"], "prompt": prompt, "entry_point": func.name,
            "canonical_solution": row["output"], "test": test}
