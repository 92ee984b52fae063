"""The layout rule (docs/layout.md), checked on the import graph so it cannot rot:

- params section X = DVC stage X = package ``wizardcoder/X/`` with ``config.py`` (the
  section's dataclass) and ``stage.py`` (the stage), entered through ``stages/X.py``;
- shared packages and modules never import a stage package; a stage imports another stage
  only through its ``config`` module (the params it declares), with the exceptions listed;
- no import cycles between modules (function-level imports count) and no private name
  imported from another module.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import yaml

from wizardcoder.params import SECTIONS

REPO = Path(__file__).resolve().parents[1]
# (`benchmarks` hosts a stage too, but it is the shared benchmark definitions first.)
STAGE_PACKAGES = {"seed", "evolve", "merge", "train", "generate", "score", "log"}
# Above the stages: experiment helpers (they run the dev stages) and the command line.
TOP = {"experiments", "cli", "params", "__main__"}
# Stage -> stage imports beyond config modules, each with the reason it is the right edge.
ALLOWED = {
    # merge.baseline: equal_size tops the seed rows up from the seed source itself.
    ("wizardcoder.merge.stage", "wizardcoder.seed.seeds"),
}
# The sections whose package is not named after them.
SECTION_PACKAGE = {"llm": "llm", "select": "experiments", "tracking": "log"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (REPO / "wizardcoder").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, str]]:
    """(module imported, name imported from it or "") for every wizardcoder import."""
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("wizardcoder"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full, "") if full in MODULES else (node.module, alias.name))
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("wizardcoder")]
    return found


def _package(name: str) -> str:
    return name.split(".")[1] if "." in name else ""


def test_shared_code_imports_no_stage_and_stages_meet_only_through_config():
    wrong = []
    for name in MODULES:
        here = _package(name)
        for target, _ in _imports(name):
            there = _package(target)
            if there == here or there not in STAGE_PACKAGES or here in TOP:
                continue
            if here not in STAGE_PACKAGES:
                wrong.append(f"shared {name} imports stage {target}")
            elif not target.endswith(".config") and (name, target) not in ALLOWED:
                wrong.append(f"stage {name} imports {target} (only .config modules)")
    assert not wrong, wrong


def test_no_private_name_is_imported_from_another_module():
    wrong = [f"{name}: from {target} import {imported}" for name in MODULES
             for target, imported in _imports(name)
             if imported.startswith("_") and not imported.startswith("__") and target != name]
    assert not wrong, wrong


def test_no_import_cycles():
    graph = {name: {t for t, _ in _imports(name) if t in MODULES and t != name}
             for name in MODULES}
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(f"{t}.")}
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles


def test_each_section_lives_in_its_stage_package_config():
    for section, where in SECTIONS.items():
        module = where.split(":")[0]
        package = SECTION_PACKAGE.get(section, section)
        assert module == f"wizardcoder.{package}.config", (section, where)


def test_each_dvc_stage_enters_through_a_thin_stages_module():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, spec in stages.items():
        words = shlex.split(spec.get("do", spec)["cmd"])
        assert words[:3] == ["python", "-m", f"stages.{name}"], (name, words[:3])
        entry = REPO / "stages" / f"{name}.py"
        code = [line for line in entry.read_text().splitlines()
                if line.strip() and not line.startswith(('"""', "The code"))]
        assert len(code) <= 5, (entry, code)  # import sys, import main, if, exit
        package = "experiments" if name.endswith("_dev") else name
        assert (REPO / "wizardcoder" / package).is_dir(), name
