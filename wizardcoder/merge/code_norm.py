"""Identifier-insensitive code comparison for decontamination.

A copy of a benchmark's canonical solution survives renaming its function and variables,
rewording its docstring and adding comments; text similarity misses it. Here each function is
parsed, its docstrings dropped (comments never reach the AST), every name it binds or reads
that is not a builtin renamed to ``v0, v1, ...`` in order of first appearance, and the result
unparsed and split into tokens. Two functions are compared by the Jaccard similarity of their
token n-gram sets: 1.0 for a renamed copy, lower as statements change.
"""

from __future__ import annotations

import ast
import builtins
import re

from wizardcoder.sanitize import extract_blocks, parseable_code

GRAM = 4  # tokens per n-gram: long enough that `( v0 ) :` alone matches nothing
_BUILTINS = frozenset(dir(builtins))
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|\S")


def extract_code(output: str) -> str:
    """The parseable Python of a response: its fenced blocks, else the response itself."""
    blocks = extract_blocks(output)
    parts = [parseable_code(b) for b in blocks] if blocks else [parseable_code(output)]
    return "\n\n".join(p for p in parts if p.strip())


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def top_level_functions(code: str) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Top-level functions and the methods of top-level classes."""
    module = _parse(code)
    if module is None:
        return []
    found = []
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node)
        elif isinstance(node, ast.ClassDef):
            found += [n for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    return found


def defined_names(code: str) -> set[str]:
    """Names of the top-level functions (what a benchmark's entry point is matched with)."""
    module = _parse(code)
    if module is None:
        return set()
    return {n.name for n in module.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


class _Renamer(ast.NodeTransformer):
    def __init__(self):
        self.names: dict[str, str] = {}

    def _new(self, name: str) -> str:
        if name in _BUILTINS:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def _drop_docstring(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node):
        node.name = self._new(node.name)
        node.decorator_list = []
        self._drop_docstring(node)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        node.name = self._new(node.name)
        self._drop_docstring(node)
        self.generic_visit(node)
        return node

    def visit_arg(self, node):
        node.arg = self._new(node.arg)
        node.annotation = None  # `List[int]` vs `list` says nothing about the algorithm
        return node

    def visit_Name(self, node):
        node.id = self._new(node.id)
        return node

    def visit_Global(self, node):
        node.names = [self._new(n) for n in node.names]
        return node

    visit_Nonlocal = visit_Global


def normalise(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    """Tokens of ``function`` with docstrings, annotations and identifiers normalised.

    The node is changed in place (callers pass a freshly parsed tree).
    """
    function.returns = None
    try:
        text = ast.unparse(_Renamer().visit(function))
    except (ValueError, RecursionError):
        return []
    tokens: list[str] = []
    for line in text.split("\n"):
        stripped = line.lstrip(" ")
        if stripped:
            # Indentation is structure: `return` inside or after a loop differ.
            tokens.append(f"<{(len(line) - len(stripped)) // 4}>")
            tokens += _TOKEN.findall(stripped)
    return tokens


def grams(tokens: list[str], n: int = GRAM) -> set[str]:
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def function_grams(code: str, min_tokens: int) -> list[tuple[str, frozenset[str]]]:
    """(original name, normalised n-gram set) per function of ``code`` with enough tokens."""
    out = []
    for function in top_level_functions(code):
        name = function.name
        tokens = normalise(function)
        if len(tokens) >= min_tokens:
            out.append((name, frozenset(grams(tokens))))
    return out


def entry_grams(solution: str, entry_point: str, min_tokens: int) -> frozenset[str] | None:
    """Normalised n-grams of a canonical solution's entry point (None: too short or absent)."""
    for name, gram_set in function_grams(solution, min_tokens):
        if name == entry_point:
            return gram_set
    return None
