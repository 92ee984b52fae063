"""Exact and near-duplicate removal that keeps what evolution made.

Rows are swept in order (seed first, then round 1, 2, ...). A row is compared only with rows
already KEPT, and never with its own ancestors: an add-constraints child restates its parent
by design, and WizardCoder trains on every evolved row. So a seed -> r1 -> r2 chain stays
whole however alike its rows are, while a row that repeats an unrelated kept row (another
seed's, or another branch's) is removed.

- exact: the normalised instruction + input equals a kept row's (any lineage: an identical
  copy adds nothing, and evolution's own filters already drop unchanged rewrites).
- near: TF-IDF cosine >= ``threshold`` to a kept, non-ancestor row. Every such pair is found,
  exactly, without the all-pairs product (all-pairs similarity search with prefix filtering,
  Bayardo et al. 2007, on scipy sparse matrices): rows are unit vectors, so if
  ``x . y >= t`` then x shares a term with y's *prefix*, y's largest weights up to where the
  remaining weights' norm drops below t. Only the prefixes are multiplied (rare, high-IDF
  words: a sparse product), candidates whose prefix dot plus the rest's norm cannot reach t
  are dropped, and the rest get their exact cosine. MinHash LSH was tried first: datasketch
  took 13 s for 8k rows (Python per row and per candidate), and numpy MinHash with 32 bands
  of 4 proposed 44M candidates at 100k templated rows ("Write a Python function that ...")
  while missing ~0.5% of the pairs. bench/merge.py measures time and memory against the
  former all-pairs product, and checks that both find the same pairs.

Everything is deterministic: pairs are sorted, ties broken by row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from wizardcoder.merge import decontam

CHUNK = 2048  # rows of the sparse product at a time (bounds its memory)
VERIFY = 50_000  # candidate pairs whose exact cosine is computed at a time
_EPS = 1e-9


def prefix_matrix(matrix, threshold: float):
    """Each row's largest weights, kept while the weights from there on have norm >= t."""
    m = matrix.tocsr()
    lengths = np.diff(m.indptr)
    row = np.repeat(np.arange(m.shape[0]), lengths)
    order = np.lexsort((m.indices, -m.data, row))  # per row: weight descending, then term
    squares = m.data[order] ** 2
    tail = np.cumsum(squares[::-1])[::-1]         # sum of squares from an entry to the end
    row_end = np.append(tail, 0.0)[np.repeat(m.indptr[1:], lengths)]
    keep = order[(tail - row_end) >= threshold * threshold - _EPS]
    keep = keep[np.lexsort((m.indices[keep], row[keep]))]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(row[keep], minlength=m.shape[0]))])
    return sp.csr_matrix((m.data[keep], m.indices[keep], indptr), shape=m.shape)


def near_pairs(matrix, threshold: float) -> dict[int, list[tuple[int, float]]]:
    """Row i -> [(earlier row j, cosine)] for every pair at or above ``threshold``, sorted.

    ``matrix``: L2-normalised TF-IDF rows (so a row dot product is a cosine).
    """
    m = matrix.tocsr()
    n = m.shape[0]
    prefix = prefix_matrix(m, threshold)
    # Norm of what each row's prefix leaves out: bounds what the rest can add to a dot.
    rest = np.sqrt(np.maximum(0.0, 1.0 - np.asarray(prefix.multiply(prefix).sum(axis=1))
                              .ravel()))
    out: dict[int, list[tuple[int, float]]] = {}
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        partial = (m[start:stop] @ prefix[:stop].T).tocoo()
        later = partial.row.astype(np.int64) + start
        earlier = partial.col.astype(np.int64)
        maybe = (earlier < later) & (partial.data + rest[earlier] >= threshold - _EPS)
        later, earlier = later[maybe], earlier[maybe]
        order = np.lexsort((earlier, later))
        later, earlier = later[order], earlier[order]
        for at in range(0, len(later), VERIFY):  # slices bound the gathered rows' memory
            i, j = later[at:at + VERIFY], earlier[at:at + VERIFY]
            cos = np.asarray(m[i].multiply(m[j]).sum(axis=1)).ravel()
            hit = cos >= threshold - _EPS
            for a, b, c in zip(i[hit], j[hit], cos[hit], strict=True):
                out.setdefault(int(a), []).append((int(b), float(c)))
    return out


@dataclass
class Verdict:
    """Why a row was removed by the sweep (``None`` reason: kept)."""

    reason: str | None = None
    duplicate_of: str | None = None
    score: float | None = None


def ancestor_ids(row_id: str, parent_of: dict[str, str]) -> set[str]:
    found: set[str] = set()
    current = parent_of.get(row_id, "")
    while current and current not in found:  # a cycle in bad lineage must not hang
        found.add(current)
        current = parent_of.get(current, "")
    return found


def sweep(rows: list[dict], texts: list[str],
          near: dict[int, list[tuple[int, float]]]) -> list[Verdict]:
    """One verdict per row, in order; ``near``: :func:`near_pairs` of the same rows."""
    parent_of = {r["id"]: r["parent_id"] for r in rows if r.get("parent_id")}
    kept = np.zeros(len(rows), dtype=bool)
    exact: dict[str, str] = {}
    verdicts = []
    for i, row in enumerate(rows):
        key = decontam.normalise(texts[i])
        if key in exact:
            verdicts.append(Verdict("exact_duplicate", exact[key], 1.0))
            continue
        matches = [(j, c) for j, c in near.get(i, ()) if kept[j]]
        if matches:
            ancestors = ancestor_ids(row["id"], parent_of)
            matches = [(j, c) for j, c in matches if rows[j]["id"] not in ancestors]
        if matches:
            j, cos = max(matches, key=lambda m: (m[1], -m[0]))
            verdicts.append(Verdict("near_duplicate", rows[j]["id"], round(cos, 4)))
            continue
        kept[i] = True
        exact[key] = row["id"]
        verdicts.append(Verdict())
    return verdicts
