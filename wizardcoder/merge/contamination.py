"""Which training rows reproduce a benchmark task, and by which detector.

Detectors, cheapest first; a row is removed by the first that fires (its report entry carries
every similarity score of that row/task pair):

- ``ngram_overlap``: a word n-gram of instruction + input + response appears verbatim in a
  task's prompt + canonical solution (``merge.decontam_ngram``).
- ``tfidf_cosine``: TF-IDF cosine of instruction + input vs prompt + solution
  (``merge.decontam_cosine``).
- ``docstring_cosine``: the same vs the task's docstring alone, so a paraphrased task
  statement is not diluted by the stub and solution text (``merge.decontam_docstring_cosine``).
- ``code_match``: Jaccard of normalised-code n-grams (:mod:`wizardcoder.merge.code_norm`) between a
  function of the response and the canonical entry point (``merge.decontam_code_jaccard``).
- ``execution``: the response defines the task's entry point and passes its tests in the
  sandbox (:mod:`wizardcoder.merge.decontam_exec`, ``merge.decontam_execution``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from wizardcoder.benchmarks.tasks import BenchTask
from wizardcoder.merge import code_norm, decontam
from wizardcoder.merge.decontam_exec import ExecJob, ExecRunner

DETECTORS = ("ngram_overlap", "tfidf_cosine", "docstring_cosine", "code_match", "execution")


def row_text(row: dict) -> str:
    return f"{row['instruction']}\n{row['input']}".strip()


@dataclass
class Scan:
    """The detectors' view of a list of rows against a list of tasks."""

    rows: list[dict]
    tasks: list[BenchTask]
    train_m: object       # TF-IDF of row_text, L2-normalised
    prompt_m: object      # TF-IDF of prompt + solution
    doc_m: object         # TF-IDF of docstrings
    codes: list[str]      # extracted response code per row
    func_m: object        # binary normalised-code n-grams per row function (benchmark vocabulary)
    func_row: np.ndarray  # owning row of each function
    func_size: np.ndarray
    bench_code_m: object  # binary n-grams of each task's canonical entry point
    bench_size: np.ndarray

    def cosine_chunk(self, which, idx: np.ndarray) -> np.ndarray:
        return (self.train_m[idx] @ which.T).toarray()

    def jaccard_chunk(self, idx: np.ndarray) -> np.ndarray:
        """Best Jaccard over each row's functions, rows ``idx`` x tasks."""
        out = np.zeros((len(idx), len(self.tasks)))
        position = {int(r): k for k, r in enumerate(idx)}
        funcs = np.flatnonzero(np.isin(self.func_row, idx))
        if len(funcs) and len(self.tasks):
            inter = (self.func_m[funcs] @ self.bench_code_m.T).toarray()
            union = self.func_size[funcs, None] + self.bench_size[None, :] - inter
            jac = np.where(self.bench_size[None, :] > 0, inter / np.maximum(union, 1), 0.0)
            np.maximum.at(out, [position[int(r)] for r in self.func_row[funcs]], jac)
        return out

    def pair_scores(self, i: int, t: int) -> dict:
        code = self.jaccard_chunk(np.array([i]))[0, t]
        return {"prompt_cosine": round(float(self.cosine_chunk(self.prompt_m, [i])[0, t]), 4),
                "docstring_cosine": round(float(self.cosine_chunk(self.doc_m, [i])[0, t]), 4),
                "code_jaccard": round(float(code), 4)}


def scan(rows: list[dict], tasks: list[BenchTask], min_tokens: int) -> Scan:
    texts = [row_text(r) for r in rows]
    matrix = decontam.tfidf_matrix(texts + [t.text for t in tasks] + [t.docstring for t in tasks]
                                   or [""])
    n, k = len(rows), len(tasks)
    train_m, prompt_m, doc_m = matrix[:n], matrix[n:n + k], matrix[n + k:n + 2 * k]
    bench_sets = [code_norm.entry_grams(t.solution, t.entry_point, min_tokens) or frozenset()
                  for t in tasks]
    vocab: dict[str, int] = {}
    for grams in bench_sets:
        for gram in sorted(grams):
            vocab.setdefault(gram, len(vocab))
    codes = [code_norm.extract_code(r["output"]) if r["output"].strip() else "" for r in rows]
    func_cols, func_row, func_size = [], [], []
    for i, code in enumerate(codes):
        for _, grams in code_norm.function_grams(code, 1) if code else ():
            func_cols.append(sorted(vocab[g] for g in grams if g in vocab))
            func_row.append(i)
            func_size.append(len(grams))
    return Scan(rows, tasks, train_m, prompt_m, doc_m, codes,
                _binary(func_cols, len(vocab)), np.asarray(func_row, dtype=np.int64),
                np.asarray(func_size, dtype=float),
                _binary([sorted(vocab[g] for g in s) for s in bench_sets], len(vocab)),
                np.asarray([len(s) for s in bench_sets], dtype=float))


def _binary(columns: list[list[int]], width: int):
    indptr = np.cumsum([0] + [len(c) for c in columns])
    indices = np.asarray([c for cols in columns for c in cols], dtype=np.int64)
    return sp.csr_matrix((np.ones(len(indices)), indices, indptr),
                         shape=(len(columns), max(width, 1)))


def _ngram_index(tasks: list[BenchTask], n: int) -> dict[tuple[str, ...], int]:
    index: dict[tuple[str, ...], int] = {}
    for t, task in enumerate(tasks):
        for gram in decontam.ngrams(task.text, n):
            index.setdefault(gram, t)  # the first task in benchmark order wins
    return index


def detect(scan_: Scan, config, runner: ExecRunner | None, chunk: int = 2048) -> list[dict | None]:
    """Per row: None (clean) or {reason, benchmark_task, score, <pair scores>}."""
    rows, tasks = scan_.rows, scan_.tasks
    hits: list[dict | None] = [None] * len(rows)
    if not tasks:
        return hits
    index = _ngram_index(tasks, config.decontam_ngram) if config.decontam_ngram else {}
    limits = (("tfidf_cosine", config.decontam_cosine), ("docstring_cosine",
              config.decontam_docstring_cosine), ("code_match", config.decontam_code_jaccard))
    for start in range(0, len(rows), chunk):
        idx = np.arange(start, min(start + chunk, len(rows)))
        scores = {"tfidf_cosine": scan_.cosine_chunk(scan_.prompt_m, idx),
                  "docstring_cosine": scan_.cosine_chunk(scan_.doc_m, idx),
                  "code_match": scan_.jaccard_chunk(idx)}
        for k, i in enumerate(idx):
            row = rows[i]
            if index:
                full = f"{row['instruction']}\n{row['input']}\n{row['output']}"
                found = [index[g] for g in decontam.ngrams(full, config.decontam_ngram)
                         if g in index]
                if found:
                    hits[i] = _hit("ngram_overlap", tasks[min(found)], None)
                    continue
            for reason, threshold in limits:
                best = scores[reason][k]
                t = int(best.argmax())
                # 1.0 disables the cosine detectors; a Jaccard of 1.0 is an exact copy.
                if best[t] >= threshold and (threshold < 1.0 or reason == "code_match"):
                    hits[i] = _hit(reason, tasks[t], round(float(best[t]), 4))
                    break
    if runner is not None and config.decontam_execution:
        _execute(scan_, hits, runner)
    for i, hit in enumerate(hits):
        if hit is not None:
            t = next(k for k, task in enumerate(tasks) if task.task_id == hit["benchmark_task"])
            hit.update(scan_.pair_scores(i, t))
    return hits


def _hit(reason: str, task: BenchTask, score: float | None) -> dict:
    return {"reason": reason, "benchmark_task": task.task_id, "score": score}


def exec_jobs(scan_: Scan, rows: list[int]) -> list[tuple[int, BenchTask]]:
    """(row, task) pairs where the row's response defines the task's entry point."""
    by_entry: dict[str, list[BenchTask]] = {}
    for task in scan_.tasks:
        if task.entry_point:
            by_entry.setdefault(task.entry_point, []).append(task)
    pairs = []
    for i in rows:
        names = code_norm.defined_names(scan_.codes[i]) if scan_.codes[i] else set()
        for name in sorted(names & by_entry.keys()):
            pairs += [(i, task) for task in by_entry[name]]
    return pairs


def _execute(scan_: Scan, hits: list[dict | None], runner: ExecRunner) -> None:
    pairs = exec_jobs(scan_, [i for i, h in enumerate(hits) if h is None])
    jobs = [ExecJob(scan_.rows[i]["id"], task, scan_.rows[i]["output"]) for i, task in pairs]
    for (i, task), (kind, _) in zip(pairs, runner.run(jobs), strict=True):
        if kind == "passed" and hits[i] is None:
            hits[i] = _hit("execution", task, 1.0)


def closest_kept(scan_: Scan, kept: list[int], config, runner: ExecRunner | None,
                 chunk: int = 2048) -> list[dict]:
    """Per task: the kept row nearest to removal (highest score / threshold over the
    similarity detectors), its scores, and how kept rows that define the entry point fared."""
    tasks = scan_.tasks
    best = np.full(len(tasks), -1.0)
    arg = np.zeros(len(tasks), dtype=np.int64)
    kept_arr = np.asarray(kept, dtype=np.int64)
    for start in range(0, len(kept_arr), chunk):
        idx = kept_arr[start:start + chunk]
        closeness = np.maximum.reduce([
            scan_.cosine_chunk(scan_.prompt_m, idx) / config.decontam_cosine,
            scan_.cosine_chunk(scan_.doc_m, idx) / config.decontam_docstring_cosine,
            scan_.jaccard_chunk(idx) / config.decontam_code_jaccard])
        top = closeness.argmax(axis=0)
        value = closeness[top, np.arange(len(tasks))]
        better = value > best
        best[better], arg[better] = value[better], idx[top[better]]
    runs: dict[str, dict[str, int]] = {}
    if runner is not None and config.decontam_execution:
        pairs = exec_jobs(scan_, kept)
        jobs = [ExecJob(scan_.rows[i]["id"], t, scan_.rows[i]["output"]) for i, t in pairs]
        for (_, task), (kind, _) in zip(pairs, runner.run(jobs), strict=True):
            counts = runs.setdefault(task.task_id, {})
            counts[kind] = counts.get(kind, 0) + 1
    out = []
    for t, task in enumerate(tasks):
        record = {"task_id": task.task_id, "closest_row": None}
        if best[t] >= 0:
            i = int(arg[t])
            record = {"task_id": task.task_id, "closest_row": scan_.rows[i]["id"],
                      "round": scan_.rows[i]["round"], **scan_.pair_scores(i, t)}
        record["kept_rows_run"] = dict(sorted(runs.get(task.task_id, {}).items()))
        out.append(record)
    return out
