"""The code a result depends on, for the caches that outlive a run (generation's resume
file, training checkpoints): a cache written by other code must never be resumed.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the directory holding wizardcoder/
_PACKAGE = "wizardcoder"


def module_file(name: str) -> Path | None:
    path = PACKAGE_ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def code_files(root_module: str) -> list[Path]:
    """The source files of ``root_module`` and of every package module it imports, at any
    depth: imports anywhere in a module (function level too), parent packages, and module
    names written as strings (backends a factory loads by name). The same
    derivation as tests/test_dvc_deps.py, which checks the two agree."""
    seen: dict[str, Path] = {}
    todo = [root_module]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        current = name if path.name != "__init__.py" else f"{name}.__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.startswith(f"{_PACKAGE}."):
                todo.append(node.value.split(":")[0])
            elif isinstance(node, ast.Import):
                todo.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(current.split(".")[: -node.level] + ([base] if base else []))
                todo.append(base)
                todo.extend(f"{base}.{alias.name}" for alias in node.names)
    return sorted(p for n, p in seen.items() if n.split(".")[0] == _PACKAGE)


def code_sha256(root_module: str) -> str:
    """sha256 of :func:`code_files` of ``root_module``, by path relative to the package and
    content."""
    digest = hashlib.sha256()
    for path in code_files(root_module):
        digest.update(f"{path.relative_to(PACKAGE_ROOT).as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
