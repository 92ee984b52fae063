"""MultiPL-E: HumanEval translated into other languages (benchmarks ``multipl-e-<lang>``).

Rows keep MultiPL-E's format: ``name`` (``HumanEval_<n>_<entry point>``), ``language``,
``prompt`` (the function's signature and docstring as a comment, to be continued), ``tests``
(appended after the completion; for C-like languages they begin with the closing brace of
the function), ``stop_tokens`` (where a completion of the prompt ends). Sources:

* the copy bundled with this package (``wizardcoder/resources/multipl_e/``, built by
  ``scripts/build_multipl_e.py``, which documents its provenance: MultiPL-E 2.x's
  "reworded" HumanEval prompts), the default: offline;
* a local file (``MULTIPL_E_PATH_<LANG>``, e.g. ``MULTIPL_E_PATH_CPP=humaneval-cpp.jsonl``:
  MultiPL-E rows as JSONL, gzip or not);
* the Hugging Face hub (``MULTIPL_E_SOURCE=hub``): ``datasets.load_dataset("nuprl/MultiPL-E",
  "humaneval-<lang>", split="test")`` (``MULTIPL_E_REVISION`` pins a dataset revision).

Each problem is the project's problem dict (``task_id`` = MultiPL-E's ``name``, ``prompt``,
``entry_point``, ``test`` = MultiPL-E's ``tests``) plus ``language``, ``stop`` (the language's
stop tokens: generation ends there) and ``instruction`` (what an instruction model is asked:
WizardCoder's "Create a <Language> script for this problem:" naming the language).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

from wizardcoder.errors import ConfigError, DataError, ExternalError
from wizardcoder.prompt_template import humaneval_instruction

RESOURCES = Path(__file__).resolve().parents[1] / "resources" / "multipl_e"
LANGUAGES = {"cpp": "C++", "java": "Java", "js": "JavaScript", "ts": "TypeScript",
             "php": "PHP", "rs": "Rust", "go": "Go", "sh": "Bash", "lua": "Lua", "rb": "Ruby"}
PREFIX = "multipl-e-"
HUB_DATASET = "nuprl/MultiPL-E"
FIELDS = ("name", "prompt", "tests", "stop_tokens")
_NAME = re.compile(r"HumanEval_(\d+)_(\w+)$")


def benchmark_name(language: str) -> str:
    return f"{PREFIX}{language}"


def language_of(benchmark: str) -> str | None:
    """The MultiPL-E language of a benchmark name, None for other benchmarks."""
    lang = benchmark[len(PREFIX):] if benchmark.startswith(PREFIX) else None
    return lang if lang in LANGUAGES else None


def load_problems(language: str) -> dict[str, dict]:
    """MultiPL-E's HumanEval in ``language``, in HumanEval order, from the configured source."""
    if language not in LANGUAGES:
        raise ConfigError(f"MultiPL-E language {language!r} is not one of "
                          f"{', '.join(LANGUAGES)}")
    local = os.environ.get(f"MULTIPL_E_PATH_{language.upper()}")
    source = os.environ.get("MULTIPL_E_SOURCE", "bundled")
    if local:
        rows = read_rows(local)
    elif source == "hub":
        rows = hub_rows(language, os.environ.get("MULTIPL_E_REVISION") or None)
    elif source == "bundled":
        rows = read_rows(RESOURCES / f"humaneval-{language}.jsonl.gz")
    else:
        raise ConfigError(f"MULTIPL_E_SOURCE={source!r}: expected bundled or hub")
    return problems_from_rows(rows, language, str(local or source))


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line, row) of a MultiPL-E JSONL file (.gz or not); DataError names a bad line."""
    path = Path(path)
    if not path.is_file():
        raise ExternalError(f"{path}: no such MultiPL-E file")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                rows.append((line, json.loads(text)))
            except json.JSONDecodeError as exc:
                raise DataError(str(path), line, None, f"not JSON: {exc.msg}") from None
    return rows


def hub_rows(language: str, revision: str | None) -> list[tuple[int, dict]]:
    """MultiPL-E from the Hugging Face hub (cached by ``datasets`` after the first download)."""
    try:
        import datasets
    except ImportError:
        raise ExternalError("MULTIPL_E_SOURCE=hub needs the package datasets") from None
    try:
        data = datasets.load_dataset(HUB_DATASET, f"humaneval-{language}", split="test",
                                     revision=revision)
    except Exception as exc:  # offline, unknown config, hub errors: say where and how
        raise ExternalError(f"could not load {HUB_DATASET} config humaneval-{language} from the "
                            f"Hugging Face hub ({type(exc).__name__}: {exc}); unset "
                            "MULTIPL_E_SOURCE to use the bundled copy") from None
    return list(enumerate(data, 1))


def problems_from_rows(rows: list[tuple[int, dict]], language: str,
                       source: str) -> dict[str, dict]:
    """The project's problem dicts from MultiPL-E rows (each field checked)."""
    problems: dict[str, dict] = {}
    for line, row in rows:
        for field in FIELDS:
            value = row.get(field)
            ok = isinstance(value, list) and all(isinstance(s, str) for s in value) \
                if field == "stop_tokens" else isinstance(value, str) and bool(value)
            if not ok:
                raise DataError(source, line, field, "missing or of the wrong type")
        match = _NAME.match(row["name"])
        if not match:
            raise DataError(source, line, "name", f"{row['name']!r} is not HumanEval_<n>_<name>")
        if row.get("language") not in (None, language, "go_test.go" if language == "go" else ""):
            raise DataError(source, line, "language",
                            f"{row['language']!r} in a file of language {language!r}")
        problems[row["name"]] = {
            "task_id": row["name"], "prompt": row["prompt"], "entry_point": match.group(2),
            "test": row["tests"], "canonical_solution": "", "language": language,
            "stop": list(row["stop_tokens"]),
            "instruction": humaneval_instruction(row["prompt"], LANGUAGES[language])}
    order = sorted(problems, key=lambda t: int(_NAME.match(t).group(1)))
    return {t: problems[t] for t in order}


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to the first of the stop tokens (MultiPL-E's completion rule)."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(ends)] if ends else text


_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|$)", re.S)


def completion_from_response(problem: dict, response: str) -> str:
    """An instruction model's answer as a continuation of the prompt: its first code block (or
    the whole text); when that repeats the prompt's signature line, what follows it; cut at
    the language's stop tokens."""
    match = _FENCE.search(response)
    code = match.group(1) if match else response
    signature = next((ln.strip() for ln in reversed(problem["prompt"].splitlines())
                      if ln.strip()), "")
    at = code.find(signature) if signature else -1
    if at >= 0:
        code = code[at + len(signature):]
        code = code[1:] if code.startswith("\n") else code
    return cut_at_stop(code, problem["stop"])


def solution_from_output(problem: dict, raw: str, prompt_format: str) -> str:
    """What generation keeps as a sample's ``solution``: the prompt and its completion (a
    base model's continuation cut at the stop tokens, or an instruction model's answer made
    one by :func:`completion_from_response`); scoring appends the tests."""
    completion = completion_from_response(problem, raw) if prompt_format == "instruction" \
        else cut_at_stop(raw, problem["stop"])
    return problem["prompt"] + completion


def program(problem: dict, completion: str) -> str:
    """The file MultiPL-E runs: prompt + completion + tests."""
    return problem["prompt"] + completion + "\n" + problem["test"]
