"""Seed instructions in Code Alpaca format (instruction, input, output).

Three sources: the set bundled with this package (written for this project), a local
JSON/JSONL file, or a Hugging Face dataset. Every row gets a stable content-derived id,
so the same instruction keeps its id across runs, orderings and machines. Malformed rows
fail with file:line and the field; nothing is written unless every row is valid.
"""

from __future__ import annotations

import hashlib
import json
import random
from importlib import resources
from pathlib import Path

from wizardcoder.errors import DataError, ExternalError
from wizardcoder.jsonl import read_utf8
from wizardcoder.seed.config import BUNDLED_RESOURCE, SeedConfig


def row_id(instruction: str, input_text: str) -> str:
    digest = hashlib.sha256(f"{instruction.strip()}\x00{input_text.strip()}".encode()).hexdigest()
    return f"seed-{digest[:12]}"


def validate_row(obj: object, where: str, line: int | None) -> dict:
    """Check one Code Alpaca row and return its normalised form."""
    if not isinstance(obj, dict):
        raise DataError(where, line, None, f"expected a JSON object, got {type(obj).__name__}")
    instruction = obj.get("instruction")
    if instruction is None:
        raise DataError(where, line, "instruction", "missing (required)")
    if not isinstance(instruction, str):
        raise DataError(where, line, "instruction",
                        f"expected a string, got {type(instruction).__name__}")
    if not instruction.strip():
        raise DataError(where, line, "instruction", "is empty")
    row = {"instruction": instruction.strip()}
    for name in ("input", "output"):
        value = obj.get(name, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise DataError(where, line, name, f"expected a string, got {type(value).__name__}")
        row[name] = value.strip()
    return row


def _json_array_rows(path: Path, text: str) -> list[tuple[int, object]]:
    """Parse a JSON array, remembering the line on which each element starts."""
    decoder = json.JSONDecoder()
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
    pos = text.index("[") + 1
    rows: list[tuple[int, object]] = []
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return rows
        line = text.count("\n", 0, pos) + 1
        obj, pos = decoder.raw_decode(text, pos)
        rows.append((line, obj))


def read_seed_file(path: str | Path) -> list[tuple[int, object]]:
    """(line, object) pairs from a JSON array or a JSONL file."""
    path = Path(path)
    text = read_utf8(path)
    if text.lstrip().startswith("["):
        return _json_array_rows(path, text)
    rows = []
    for lineno, line_text in enumerate(text.splitlines(), start=1):
        if not line_text.strip():
            continue
        try:
            rows.append((lineno, json.loads(line_text)))
        except json.JSONDecodeError as exc:
            raise DataError(path, lineno, None, f"invalid JSON: {exc.msg}") from None
    return rows


def _bundled_rows() -> tuple[str, list[tuple[int, object]]]:
    resource = resources.files("wizardcoder").joinpath("resources", BUNDLED_RESOURCE)
    with resources.as_file(resource) as path:
        return f"wizardcoder/resources/{BUNDLED_RESOURCE}", read_seed_file(path)


def _hf_rows(config: SeedConfig) -> tuple[str, list[tuple[int, object]]]:
    where = f"hf://{config.hf_dataset}[{config.hf_split}]"
    try:
        import datasets

        dataset = datasets.load_dataset(config.hf_dataset, split=config.hf_split,
                                        revision=config.hf_revision)
    except Exception as exc:  # datasets raises many kinds (ConnectionError, FileNotFound, ...)
        raise ExternalError(
            f"cannot load Hugging Face dataset {config.hf_dataset!r} (split "
            f"{config.hf_split!r}): {type(exc).__name__}: {str(exc)[:300]}. Offline? Download it "
            f"once with network, or export it to JSONL and use seed.source=file.") from None
    return where, [(index + 1, dict(row)) for index, row in enumerate(dataset)]


def load_seeds(config: SeedConfig) -> tuple[list[dict], dict]:
    """All seed rows (validated, with ids) and a small stats dict."""
    if config.source == "bundled":
        where, raw_rows = _bundled_rows()
    elif config.source == "file":
        where, raw_rows = str(config.path), read_seed_file(config.path)
    else:
        where, raw_rows = _hf_rows(config)
    rows, seen, duplicates = [], set(), 0
    for line, obj in raw_rows:
        row = validate_row(obj, where, line)
        rid = row_id(row["instruction"], row["input"])
        if rid in seen:
            duplicates += 1
            continue
        seen.add(rid)
        rows.append({"id": rid, **row, "lineage": {"seed_id": rid, "parent_id": None, "round": 0,
                                                    "source": where, "line": line}})
    if not rows:
        raise DataError(where, None, None, "no rows")
    total = len(rows)
    if config.shuffle_seed is not None:
        random.Random(config.shuffle_seed).shuffle(rows)
    if config.limit:
        rows = rows[: config.limit]
    stats = {"rows_read": len(raw_rows), "exact_duplicates": duplicates, "rows_unique": total,
             "rows": len(rows), "missing_output": sum(1 for r in rows if not r["output"])}
    return rows, stats
