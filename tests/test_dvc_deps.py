"""dvc.yaml declares what each stage really reads: DVC reruns a stage when, and only when, one
of its deps or params changes, so a module a stage imports but does not declare is a change
DVC never sees ("Data and pipelines are up to date" after editing the stage's own logic).

The modules of a stage are derived, not listed by hand: the stage's entry point
(``stages/__init__.py`` and ``stages/<stage>.py``, which ``python -m`` executes) and everything
it imports (the whole import graph within the package, function-level imports included), plus
every bundled resource file a module names. After adding or importing a module,
``python scripts/update_dvc_deps.py`` rewrites the lists.
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
    ``"wizardcoder.generate.hf"`` with importlib)."""
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


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


SCRIPT = re.compile(r"""["'](\w+\.py)["']""")


def _entry(cmd: str) -> set[Path]:
    """The files ``python -m stages.<stage>`` executes and everything they import, including
    the scripts a module starts by path (the sandbox's ``worker.py``, ``toolchain_exec.py``,
    named as a file beside the module) and what those import."""
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    assert module.startswith("stages."), f"{cmd!r}: stages run as python -m stages.<stage>"
    entry = REPO / Path(*module.split(".")).with_suffix(".py")
    files = {REPO / "stages" / "__init__.py", entry}
    for path in sorted(files):
        files |= _closure(_imports(ast.parse(path.read_text()), module))
    todo = sorted(files)
    while todo:
        path = todo.pop()
        for name in SCRIPT.findall(path.read_text()):
            script = path.with_name(name)
            if script.is_file() and script not in files and script.name != path.name:
                dotted = ".".join(script.relative_to(REPO).with_suffix("").parts)
                new = {script} | _closure(_imports(ast.parse(script.read_text()), dotted))
                todo.extend(sorted(new - files))
                files |= new
    return files


def _declared(deps: list[str]) -> list[Path]:
    return [(REPO / d).resolve() for d in deps if "${" not in d]


def _covered(path: Path, declared: list[Path]) -> bool:
    return any(path == d or d in path.parents for d in declared)


RESOURCE = re.compile(r"""["']([\w./-]+\.(?:jsonl|json|jsonl\.gz))["']""")


def _resources(files: set[Path]) -> set[Path]:
    """Bundled data the modules name: files in wizardcoder/resources/ by file name, and its
    folders (e.g. ``multipl_e``, read file by file) by folder name."""
    resources = REPO / "wizardcoder" / "resources"
    bundled = {p.name: p for p in resources.glob("*") if p.is_file()}
    folders = [p for p in resources.glob("*") if p.is_dir() and p.name != "__pycache__"]
    found = set()
    for path in files:
        text = path.read_text()
        for name in RESOURCE.findall(text):
            if Path(name).name in bundled:
                found.add(bundled[Path(name).name])
        found |= {f for f in folders if re.search(rf"""["']{re.escape(f.name)}["']""", text)}
    return found


@pytest.mark.parametrize("stage", sorted(s for s, spec in _stages().items()
                                         if not spec.get("always_changed")))
def test_every_module_and_resource_a_stage_reads_is_a_dep(stage):
    """(A stage that always runs, like `log`, needs no deps to be rerun.)"""
    spec = _stages()[stage]
    modules = _entry(spec["cmd"])
    needed = modules | _resources(modules)
    declared = _declared(spec.get("deps", []))
    missing = sorted(str(p.relative_to(REPO)) for p in needed if not _covered(p, declared))
    assert not missing, (f"dvc.yaml stage {stage!r} does not declare files it reads: {missing}; "
                         "add them (or their directory) to its deps")


def test_the_derivation_sees_function_level_imports():
    """The test above can fail: the closure of the score stage reaches the sandbox modules
    imported inside functions, and a stage without them in its deps is reported."""
    modules = _entry("python -m stages.score")
    names = {str(p.relative_to(REPO)) for p in modules}
    assert "wizardcoder/score/stage.py" in names
    assert "wizardcoder/sandbox/harness.py" in names  # imported inside score_and_write
    assert not _covered(REPO / "wizardcoder/sandbox/harness.py",
                        _declared(["stages/score.py", "wizardcoder/score/stage.py"]))


def test_the_derivation_sees_scripts_started_by_path_and_resource_folders():
    """The sandbox's worker runs as a script by path (no import names it) and MultiPL-E's
    tasks are read from a folder of files: both are still part of what scoring reads."""
    modules = _entry("python -m stages.score")
    names = {str(p.relative_to(REPO)) for p in modules | _resources(modules)}
    assert {"wizardcoder/sandbox/worker.py", "wizardcoder/sandbox/seccomp.py",
            "wizardcoder/sandbox/toolchain_exec.py", "wizardcoder/resources/multipl_e"} <= names
