"""MBPP the way WizardCoder reports it: the 500 test tasks (task_id 11-510), bundled.

The data is MBPP's test split (Austin et al., 2021; google-research/mbpp, CC BY 4.0) as
WizardCoder released it (github.com/nlpxucan/WizardLM ``WizardCoder/data/mbpp.test.zip``):
``wizardcoder/resources/mbpp-test-500.jsonl.gz``, byte for byte. Rows: task_id, text, code,
test_list (three ``assert`` lines), test_setup_code, challenge_test_list.

Prompts (docs/evaluation.md, "MBPP"):

- instruction format, as WizardCoder's ``src/mbpp_gen.py`` builds it: the problem text, then
  ``Test examples:`` and the asserts, one per line; a task whose examples are very long
  (task 493, 4,145 characters) shows its function's call signature instead. The instruction
  template around it is the project's one (``prompt_template``).
- completion format (base models): a module docstring holding the same text and examples,
  which the model continues with the function (the shape of MBPP+'s prompts; a raw string,
  as some examples hold regular expressions with backslashes).

Scoring: a sample is judged like the plain reference execution (program, then
``test_setup_code``, then the asserts, in one fresh interpreter), with the asserts on the
trusted side: ``check(candidate)`` runs them and each call of the task's function goes to
the sandboxed program. A task whose asserts use names its ``test_setup_code`` defines (task
367 builds trees from the program's own ``Node`` class) runs the setup in the sandbox after
the program, and each such call as a whole there too (:func:`setup_calls`).
"""

from __future__ import annotations

import ast
import gzip
import json
import textwrap
import warnings
from importlib import resources
from pathlib import Path

from wizardcoder.errors import DataError

RESOURCE = "mbpp-test-500.jsonl.gz"
TEST_IDS = range(11, 511)  # the test split of MBPP (500 tasks)
FIELDS = ("task_id", "text", "code", "test_list")
# WizardCoder shows task 493's call signature instead of its 4,145 characters of examples;
# no other task comes near this (the next longest: 2,619).
LONG_EXAMPLES_CHARS = 3000
SETUP_CALL = "mbpp_setup_call"  # the sandboxed helper that runs a call needing setup names


def bundled_path() -> Path:
    """The bundled MBPP test split (a file inside the installed package)."""
    return Path(str(resources.files("wizardcoder").joinpath("resources", RESOURCE)))


def task_id(number: int) -> str:
    return f"Mbpp/{number}"


def read_rows(path: str | Path | None = None) -> list[dict]:
    """MBPP rows in the original format from ``path`` (.jsonl or .jsonl.gz; default: the
    bundled copy), each checked; file:line errors name the field."""
    path = Path(path) if path is not None else bundled_path()
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    try:
        with opener(path, "rb") as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    raise DataError(path, line, None, f"invalid JSON: {exc}") from None
                check_row(path, line, row)
                rows.append(row)
    except FileNotFoundError:
        raise DataError(path, None, None, "file not found") from None
    except (OSError, EOFError) as exc:  # a damaged .gz
        raise DataError(path, None, None, f"cannot be read: {exc}") from None
    return rows


def check_row(path: Path, line: int, row) -> None:
    if not isinstance(row, dict):
        raise DataError(path, line, None, "expected a JSON object")
    if "text" not in row and "prompt" in row:
        raise DataError(path, line, "text", "missing: this looks like an MBPP+ (evalplus) "
                        "row; MBPP needs the original test split (task_id, text, code, "
                        "test_list)")
    for name in FIELDS:
        if name not in row:
            raise DataError(path, line, name, "missing")
    if not isinstance(row["task_id"], int) or isinstance(row["task_id"], bool):
        raise DataError(path, line, "task_id", "expected an integer (original MBPP ids)")
    for name in ("text", "code"):
        if not isinstance(row[name], str):
            raise DataError(path, line, name, "expected a string")
    tests = row["test_list"]
    if not (isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests)):
        raise DataError(path, line, "test_list", "expected a non-empty list of strings")
    if not isinstance(row.get("test_setup_code") or "", str):
        raise DataError(path, line, "test_setup_code", "expected a string")


def missing_test_ids(rows: list[dict]) -> list[int]:
    seen = {row["task_id"] for row in rows}
    return [i for i in TEST_IDS if i not in seen]


def parse(source: str) -> ast.Module:
    """``ast.parse`` without the warnings of MBPP's own text (``"\\w"`` in plain strings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return ast.parse(source.replace("\r\n", "\n"))


def entry_point(code: str, tests: list[str]) -> str:
    """The function of ``code`` that the tests call (MBPP rows do not name it); "" when
    none can be found."""
    try:
        defined = {n.name for n in parse(code).body
                   if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        called = [n.func.id for t in tests for n in ast.walk(parse(t))
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    except SyntaxError:
        return ""
    return next((name for name in called if name in defined), "")


def signature(code: str, name: str) -> str:
    """``name(arg, ...)`` as ``code`` defines it."""
    for node in parse(code).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return f"{name}({ast.unparse(node.args)})"
    return f"{name}(...)"


def examples(row: dict, entry: str) -> list[str]:
    """The test examples shown to the model: the asserts, or the call signature when they
    are longer than :data:`LONG_EXAMPLES_CHARS` together (WizardCoder's task 493)."""
    tests = [t.replace("\r\n", "\n").strip() for t in row["test_list"]]
    if sum(len(t) for t in tests) > LONG_EXAMPLES_CHARS:
        return [signature(row["code"], entry)]
    return tests


def problem_text(row: dict, entry: str) -> str:
    """The problem as WizardCoder's mbpp_gen.py words it: text, "Test examples:", examples."""
    text = row["text"].replace("\r\n", "\n").strip()
    return "\n".join([text, "Test examples:", *examples(row, entry)])


def setup_calls(tests: list[str], setup: str, entry: str) -> tuple[list[str], list[str]]:
    """(asserts for the trusted side, call expressions to run in the sandbox).

    The asserts are re-rendered from their syntax tree (same meaning; string literals
    escaped, so compiling them warns of nothing). Each call of ``entry`` whose arguments use
    a name the setup code assigns (a tree built from the program's own class) is replaced by
    ``mbpp_setup_call(i)``, and its source is call ``i`` of the sandboxed helper."""
    try:
        assigned = {n.id for n in ast.walk(parse(setup))
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    except SyntaxError:
        assigned = set()
    calls: list[str] = []

    class Rewrite(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call):
            uses = {n.id for arg in [*node.args, *(k.value for k in node.keywords)]
                    for n in ast.walk(arg) if isinstance(n, ast.Name)}
            if isinstance(node.func, ast.Name) and node.func.id == entry and uses & assigned:
                calls.append(ast.unparse(node))
                return ast.Call(ast.Name(SETUP_CALL, ast.Load()),
                                [ast.Constant(len(calls) - 1)], [])
            return self.generic_visit(node)

    out = []
    for test in tests:
        tree = parse(test)
        if assigned:
            tree = ast.fix_missing_locations(Rewrite().visit(tree))
        out.append(ast.unparse(tree))
    return out, calls


def to_problem(row: dict) -> dict:
    """One task in the shape generation and the sandbox harness use.

    ``prompt`` (the completion-format prompt) is a docstring, so a program is ``prompt +
    completion`` as in HumanEval; ``instruction`` is the text the instruction format wraps.
    ``harness_entry_point`` / ``program_suffix`` (setup tasks only) tell the scorer to call
    the sandboxed helper and append the setup code and helper to every program."""
    entry = entry_point(row["code"], row["test_list"])
    text = problem_text(row, entry)
    setup = (row.get("test_setup_code") or "").replace("\r\n", "\n").strip()
    asserts, calls = setup_calls(row["test_list"], setup, entry)
    test = "def check(candidate):\n" + textwrap.indent("\n".join(asserts), "    ") + "\n"
    problem = {
        "task_id": task_id(row["task_id"]), "prompt": f'r"""\n{text}\n"""\n',
        "instruction": text, "entry_point": entry, "canonical_solution": row["code"],
        "test": test, "text": row["text"], "test_list": list(row["test_list"]),
        "test_setup_code": row.get("test_setup_code") or ""}
    if setup and not calls:  # setup code the asserts do not need still runs, as in MBPP
        problem["program_suffix"] = f"\n\n{setup}\n"
    elif calls:
        helper = "\n".join([f"def {SETUP_CALL}(i):", "    return (",
                            *(f"        lambda: {c}," for c in calls), "    )[i]()"])
        problem["program_suffix"] = f"\n\n{setup}\n\n{helper}\n"
        problem["harness_entry_point"] = SETUP_CALL
    return problem


def load_problems(path: str | Path | None = None) -> dict[str, dict]:
    """The 500 MBPP test tasks as problems, in task order (default: the bundled copy)."""
    rows = read_rows(path)
    missing = missing_test_ids(rows)
    if missing:
        raise DataError(path or bundled_path(), None, "task_id",
                        f"has {500 - len(missing)} of the 500 MBPP test tasks (task_id "
                        f"11-510); missing e.g. {missing[:5]}")
    problems = {task_id(r["task_id"]): to_problem(r) for r in rows
                if r["task_id"] in TEST_IDS}
    return dict(sorted(problems.items(), key=lambda item: int(item[0].split("/")[1])))


def reference_program(problem: dict, program: str) -> str:
    """What the plain reference execution runs in one fresh interpreter: the program, the
    task's test_setup_code, then its asserts (as human-eval-style harnesses run MBPP)."""
    return "\n".join([program, problem["test_setup_code"], *problem["test_list"], ""])
