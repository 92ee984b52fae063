"""The bundled seed instruction set is well formed and every reference answer passes its checks."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

from tests.seed_task_checks import CHECKS

SEED_PATH = Path(__file__).resolve().parents[1] / "wizardcoder" / "resources" / "seed_tasks.jsonl"
KEYS = {"instruction", "input", "output"}
MIN_ROWS = 48
TIMEOUT_S = 10


def load_rows() -> list[dict]:
    """Read the seed file, one JSON object per non-blank line."""
    lines = SEED_PATH.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run_check(source: str) -> str | None:
    """Run `source` in a fresh isolated interpreter; None on success, else the error tail."""
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", source], capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"timed out after {TIMEOUT_S} s"
    if proc.returncode != 0:
        return " | ".join(proc.stderr.strip().splitlines()[-3:]) or f"exit {proc.returncode}"
    return None


@cache
def all_results() -> dict[int, str | None]:
    """Run every row's checks (two at a time) and map index -> failure message or None."""
    rows = load_rows()
    indices = sorted(i for i in CHECKS if i < len(rows))
    sources = [rows[i]["output"] + "\n\n" + CHECKS[i] for i in indices]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(indices, pool.map(run_check, sources), strict=True))


def test_rows_are_well_formed() -> None:
    """At least 48 rows, exactly the three string keys, non-empty, distinct instructions."""
    rows = load_rows()
    assert len(rows) >= MIN_ROWS
    for i, row in enumerate(rows):
        assert set(row) == KEYS, f"row {i}: keys {sorted(row)}"
        assert all(isinstance(row[key], str) for key in KEYS), f"row {i}: non-string value"
        assert row["instruction"].strip() and row["output"].strip(), f"row {i}: empty field"
    instructions = [row["instruction"] for row in rows]
    assert len(set(instructions)) == len(instructions), "duplicate instructions"


def test_outputs_are_plain_stdlib_definitions() -> None:
    """Outputs are unfenced code whose top level holds only imports, defs, classes, constants."""
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign)
    for i, row in enumerate(load_rows()):
        assert "```" not in row["output"], f"row {i}: markdown fence"
        tree = ast.parse(row["output"])
        for node in tree.body:
            assert isinstance(node, allowed), f"row {i}: top-level {type(node).__name__}"
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in sys.stdlib_module_names, f"row {i}: {module}"


def test_every_row_has_a_check() -> None:
    """CHECKS keys are exactly the row indices."""
    assert set(CHECKS) == set(range(len(load_rows())))


@pytest.mark.parametrize("index", sorted(CHECKS))
def test_reference_answer_passes(index: int) -> None:
    """Row `index`'s output satisfies its asserts in a fresh `python -I` process."""
    results = all_results()
    assert index in results, f"row {index} does not exist"
    failure = results[index]
    assert failure is None, f"row {index}: {failure}"
