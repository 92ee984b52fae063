"""MultiPL-E fidelity and throughput: the project's sandboxed verdicts against MultiPL-E's.

    pip download --no-deps nvidia-bigcode-eval -d /tmp/ref && \
        unzip -q /tmp/ref/nvidia_bigcode_eval-*.whl -d /tmp/ref/whl
    python bench/multipl_e_fidelity.py \
        --reference /tmp/ref/whl/bigcode_eval/tasks/custom_metrics/multiple_metrics

Two sets of completions (prompt + completion + "\\n" + tests is the program, as in MultiPL-E):

* ``bench/data/multipl_e_stored.jsonl``: completions stored in MultiPL-E's repository
  (``experiments/<lang>-codegen-0.2-reworded/HumanEval_*.results.json``, path and commit in
  each row) with the status MultiPL-E's evaluator gave them then;
* ``bench/data/multipl_e_handwritten.jsonl``: a passing, a failing, a non-compiling and an
  endless completion of HumanEval_53_add per language (those of tests/test_multipl_e.py);
* ``bench/data/multipl_e_smollm2.jsonl.gz``: what the bundled SmolLM2 writes
  (``bench/multipl_e_samples.py``): programs that fail in every way.

Each program is judged by the project (:func:`wizardcoder.sandbox.toolchain_run.run_program`,
in the sandbox) and, with ``--reference``, by MultiPL-E's evaluator scripts themselves
(``eval_<lang>.eval_script`` from the ``nvidia-bigcode-eval`` wheel, run here on the host the
way MultiPL-E runs them: a temp file, the toolchain on PATH, no sandbox; not a dependency of the
project). Statuses are compared after MultiPL-E's finer JavaScript/TypeScript statuses
(AssertionError, ReferenceError) are folded into Exception. Prints agreement per language,
every difference, samples/s of both (the same number of programs in flight) and the mean
seconds per program of each, per language.
The reference's Java evaluator expects javatuples at /usr/multiple/javatuples-1.2.jar:
``--link-javatuples`` links Debian's jar there (root).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import sys
import tempfile
import time
import types
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wizardcoder.benchmarks.multipl_e import load_problems, program
from wizardcoder.sandbox.toolchain_run import ToolchainLimits, run_program

HERE = Path(__file__).resolve().parent
DATA = (HERE / "data" / "multipl_e_stored.jsonl", HERE / "data" / "multipl_e_handwritten.jsonl",
        HERE / "data" / "multipl_e_smollm2.jsonl.gz")
REFERENCE_MODULES = {"cpp": ("eval_cpp", ".cpp"), "java": ("eval_java", ".java"),
                     "js": ("eval_javascript", ".js"), "ts": ("eval_ts", ".ts"),
                     "php": ("eval_php", ".php"), "rs": ("eval_rust", ".rs"),
                     "go": ("eval_go", "_test.go"), "sh": ("eval_sh", ".sh"),
                     "lua": ("eval_lua", ".lua"), "rb": ("eval_ruby", ".rb")}
FOLD = {"AssertionError": "Exception", "ReferenceError": "Exception"}


def read_rows(paths) -> list[dict]:
    rows = []
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            rows += [json.loads(line) for line in handle if line.strip()]
    return rows


def reference_evaluators(directory: str) -> dict:
    """MultiPL-E's eval_<lang>.eval_script functions, loaded by path as one package."""
    package = types.ModuleType("multiple_metrics")
    package.__path__ = [directory]
    sys.modules["multiple_metrics"] = package
    found = {}
    for language, (name, suffix) in REFERENCE_MODULES.items():
        spec = importlib.util.spec_from_file_location(f"multiple_metrics.{name}",
                                                      os.path.join(directory, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        found[language] = (module.eval_script, suffix)
    return found


def run_reference(evaluators: dict, language: str, text: str) -> tuple[str, float]:
    """(MultiPL-E's status, seconds) of one program."""
    eval_script, suffix = evaluators[language]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="multipl-e-ref-") as tmp:
        path = Path(tmp) / f"program{suffix}"
        path.write_text(text, encoding="utf-8")
        result = eval_script(path)
    detail = f"exit {result.get('exit_code')}: {str(result.get('stderr') or '')[-160:]}"
    return f"{result['status']}|{detail}", time.perf_counter() - start


def timed_map(fn, jobs: list, workers: int) -> tuple[list, float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(fn, jobs))
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", nargs="*", default=[str(p) for p in DATA])
    parser.add_argument("--reference", default=None,
                        help="MultiPL-E's evaluator scripts (multiple_metrics directory)")
    parser.add_argument("--languages", default=",".join(REFERENCE_MODULES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--link-javatuples", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.link_javatuples and not os.path.exists("/usr/multiple/javatuples-1.2.jar"):
        os.makedirs("/usr/multiple", exist_ok=True)
        os.symlink("/usr/share/java/javatuples.jar", "/usr/multiple/javatuples-1.2.jar")
    # The reference runs whatever toolchains PATH finds: Debian's, as the sandbox does.
    os.environ["PATH"] = "/usr/bin:/bin"
    languages = args.languages.split(",")
    rows = [r for r in read_rows(args.samples) if r["language"] in languages]
    problems = {lang: load_problems(lang) for lang in languages}
    jobs = [(r["language"], program(problems[r["language"]][r["task_id"]], r["completion"]))
            for r in rows]
    limits = ToolchainLimits()
    ours, our_s = timed_map(lambda job: run_program(job[0], job[1], limits), jobs, args.workers)
    theirs, their_s = [None] * len(jobs), None
    if args.reference:
        evaluators = reference_evaluators(args.reference)
        theirs, their_s = timed_map(lambda job: run_reference(evaluators, *job), jobs,
                                    args.workers)
    report = {"samples": len(jobs), "project_s": round(our_s, 1),
              "reference_s": None if their_s is None else round(their_s, 1), "languages": {}}
    per: dict = defaultdict(lambda: {"n": 0, "vs_reference": 0, "vs_stored": 0, "stored": 0,
                                     "statuses": Counter(), "project_s": 0.0,
                                     "reference_s": 0.0})
    differences = []
    for row, mine, theirs_timed in zip(rows, ours, theirs, strict=True):
        lang, entry = row["language"], per[row["language"]]
        ref, ref_s = theirs_timed if theirs_timed is not None else (None, 0.0)
        ref, ref_detail = ref.split("|", 1) if ref else (None, "")
        entry["n"] += 1
        entry["statuses"][mine.status] += 1
        entry["project_s"] += mine.duration_s
        entry["reference_s"] += ref_s
        for key, other in (("vs_reference", ref), ("vs_stored", row.get("status"))):
            if other is None:
                continue
            if key == "vs_stored":
                entry["stored"] += 1
            if FOLD.get(other, other) == mine.status:
                entry[key] += 1
            else:
                differences.append({"language": lang, "task_id": row["task_id"],
                                    "against": key[3:], "project": mine.status,
                                    "theirs": other, "detail": mine.detail[-200:],
                                    "their_detail": ref_detail if key == "vs_reference" else "",
                                    "source": row.get("source", "")})
    print(f"{len(jobs)} programs; project (sandbox) {our_s:.1f} s = "
          f"{len(jobs) / our_s:.2f} samples/s" + (
              f"; reference (MultiPL-E's evaluator, no sandbox) {their_s:.1f} s = "
              f"{len(jobs) / their_s:.2f} samples/s; ratio {our_s / their_s:.2f}x"
              if their_s else ""))
    print(f"{'lang':5} {'n':>4} {'=ref':>6} {'stored':>6} {'=stored':>7} {'s/prog':>7} "
          f"{'ref s':>6}  project statuses")
    for lang in languages:
        e = per.get(lang)
        if not e:
            continue
        ref_pct = f"{100 * e['vs_reference'] / e['n']:.1f}%" if args.reference else "-"
        stored_pct = f"{100 * e['vs_stored'] / e['stored']:.1f}%" if e["stored"] else "-"
        ref_s = f"{e['reference_s'] / e['n']:.2f}" if args.reference else "-"
        print(f"{lang:5} {e['n']:4d} {ref_pct:>6} {e['stored']:6d} {stored_pct:>7} "
              f"{e['project_s'] / e['n']:7.2f} {ref_s:>6}  {dict(e['statuses'])}")
        report["languages"][lang] = {**{k: v for k, v in e.items() if k != "statuses"},
                                     "statuses": dict(e["statuses"])}
    for diff in differences:
        print(f"DIFF {diff['language']} {diff['task_id']} vs {diff['against']}: project "
              f"{diff['project']}, theirs {diff['theirs']} :: ours {diff['detail']!r} :: "
              f"theirs {diff['their_detail']!r}")
    report["differences"] = differences
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
