"""dvc.yaml declares what each stage really reads: DVC reruns a stage when, and only when, one
of its deps or params changes, so a module a stage imports but does not declare is a change
DVC never sees ("Data and pipelines are up to date" after editing the stage's own logic).

The modules of a stage are derived, not listed by hand: the stage's entry point, the imports
in its branch of ``wizardcoder.cli._dispatch`` and everything those import (the whole import
graph within the package, function-level imports included), plus every bundled resource file
a module names.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "wizardcoder"


def _module_file(name: str) -> Path | None:
    path = REPO / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, current: str) -> set[str]:
    """Every package module named by an import anywhere in the tree (incl. `from x import
    submodule`, relative imports, and module names in strings: lazy factories import
    ``"wizardcoder.generation.hf"`` with importlib)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.fullmatch(rf"{PACKAGE}(\.\w+)+", node.value.split(":")[0]):
            found.add(node.value.split(":")[0])
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = current.split(".")[: -node.level]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] == PACKAGE and _module_file(m)}


def _closure(roots: set[str]) -> set[Path]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        tree = ast.parse(_module_file(name).read_text())
        todo.extend(_imports(tree, name if _module_file(name).name != "__init__.py"
                             else f"{name}.__init__"))
    return {_module_file(m) for m in seen}


def _dispatch_roots(words: list[str]) -> set[str]:
    """The modules imported in the `_dispatch` branch that handles these CLI words."""
    tree = ast.parse((REPO / "wizardcoder" / "cli.py").read_text())
    dispatch = next(n for n in ast.walk(tree)
                    if isinstance(n, ast.FunctionDef) and n.name == "_dispatch")
    roots: set[str] = set()

    def walk(node: ast.If) -> None:
        test = node.test
        names = []
        if isinstance(test, ast.Compare):  # cmd == "x", or sub in ("x", "y")
            right = test.comparators[0]
            items = right.elts if isinstance(right, ast.Tuple | ast.List | ast.Set) else [right]
            names = [i.value for i in items if isinstance(i, ast.Constant)]
        matched = any(name in words for name in names)
        if matched:
            for stmt in node.body:  # nested branches count only when they match too
                if isinstance(stmt, ast.If):
                    walk(stmt)
                else:
                    roots.update(_imports(stmt, "wizardcoder.cli"))
        for stmt in node.orelse:
            if isinstance(stmt, ast.If):
                walk(stmt)

    for stmt in dispatch.body:
        if isinstance(stmt, ast.If):
            walk(stmt)
    return roots


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _entry(cmd: str) -> tuple[set[Path], set[str]]:
    """(files of the entry module and what it imports, CLI words) of a stage command."""
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    if module.startswith("stages."):
        path = REPO / Path(*module.split("."))
        entry = path.with_suffix(".py")
        imported = _imports(ast.parse(entry.read_text()), module)
        uses_cli = "wizardcoder.cli" in imported
        return ({entry} | _closure(imported - {"wizardcoder.cli"})
                | ({REPO / "wizardcoder" / "cli.py"} if uses_cli else set()),
                {module.split(".")[1]} if uses_cli else set())
    return {REPO / "wizardcoder" / "cli.py"}, set(words[words.index("-m") + 2:])


def _declared(deps: list[str]) -> list[Path]:
    return [(REPO / d).resolve() for d in deps if "${" not in d]


def _covered(path: Path, declared: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in declared)


RESOURCE = re.compile(r"""["']([\w./-]+\.(?:jsonl|json|jsonl\.gz))["']""")


def _resources(files: set[Path]) -> set[Path]:
    """Bundled data files (wizardcoder/resources/*) the modules name."""
    bundled = {p.name: p for p in (REPO / "wizardcoder" / "resources").glob("*") if p.is_file()}
    found = set()
    for path in files:
        for name in RESOURCE.findall(path.read_text()):
            if Path(name).name in bundled:
                found.add(bundled[Path(name).name])
    return found


@pytest.mark.parametrize("stage", sorted(s for s, spec in _stages().items()
                                         if not spec.get("always_changed")))
def test_every_module_and_resource_a_stage_reads_is_a_dep(stage):
    """(A stage that always runs, like `log`, needs no deps to be rerun.)"""
    spec = _stages()[stage]
    entry, words = _entry(spec["cmd"])
    modules = _closure(_dispatch_roots(sorted(words))) | entry
    needed = modules | _resources(modules)
    declared = _declared(spec.get("deps", []))
    missing = sorted(str(p.relative_to(REPO)) for p in needed if not _covered(p, declared))
    assert not missing, (f"dvc.yaml stage {stage!r} does not declare files it reads: {missing}; "
                         "add them (or their directory) to its deps")


def test_the_derivation_sees_function_level_imports():
    """The test above can fail: the closure of the score branch reaches the sandbox modules
    imported inside functions, and a stage without them in its deps is reported."""
    modules = _closure(_dispatch_roots(["score"]))
    names = {str(p.relative_to(REPO)) for p in modules}
    assert "wizardcoder/pipeline/score.py" in names
    assert "wizardcoder/scoring/harness.py" in names  # imported inside score_and_write
    assert not _covered(REPO / "wizardcoder/scoring/harness.py",
                        _declared(["stages/score.py", "wizardcoder/pipeline/score.py"]))
