"""Text similarity for merge: decontamination, near-duplicates and per-round statistics.

TF-IDF cosine (scikit-learn) catches reworded text; word n-gram overlap catches verbatim
copies of a benchmark prompt or solution inside a longer training row.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def normalise(text: str) -> str:
    return " ".join(words(text))


def tfidf_matrix(texts: list[str]):
    """L2-normalised TF-IDF rows, so a dot product is a cosine."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z_][A-Za-z0-9_]*|\d+", lowercase=True,
                                 sublinear_tf=True, min_df=1)
    return vectorizer.fit_transform(texts)


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
