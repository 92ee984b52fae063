"""Exact and near-duplicate removal that keeps what evolution made.

Rows are swept in order (seed first, then round 1, 2, ...). A row is compared only with rows
already KEPT, and never with its own ancestors: an add-constraints child restates its parent
by design, and WizardCoder trains on every evolved row. So a seed -> r1 -> r2 chain stays
whole however alike its rows are, while a row that repeats an unrelated kept row (another
seed's, or another branch's) is removed.

- exact: the normalised instruction + input equals a kept row's (any lineage: an identical
  copy adds nothing, and evolution's own filters already drop unchanged rewrites).
- near: TF-IDF cosine >= ``threshold`` to a kept, non-ancestor row. Pairs are found without
  comparing all pairs: MinHash LSH (datasketch) over word unigrams and bigrams proposes
  candidates at a Jaccard well below what a 0.9 cosine implies, and each candidate's exact
  TF-IDF cosine decides. bench/merge.py measures the time, memory and agreement with the
  all-pairs product this replaced.

Everything is deterministic: fixed MinHash seed, SHA-1 shingle hashes (datasketch's default),
candidates sorted, ties broken by row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wizardcoder import decontam

NUM_PERM = 128
MINHASH_SEED = 1
# A 0.9 TF-IDF cosine between short instructions leaves their unigram+bigram sets at a
# Jaccard of roughly 0.6-0.8; proposing pairs from 0.4 keeps recall near 1 (see bench).
LSH_JACCARD = 0.4
VERIFY_CHUNK = 200_000


def shingles(text: str) -> list[bytes]:
    tokens = decontam.words(text)
    grams = set(tokens) | {f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)}
    return sorted(g.encode() for g in grams) or [b""]


def candidate_pairs(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(later, earlier) row indices of the pairs LSH proposes, sorted."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=LSH_JACCARD, num_perm=NUM_PERM)
    later: list[int] = []
    earlier: list[int] = []
    hashes = MinHash.bulk([shingles(t) for t in texts], num_perm=NUM_PERM, seed=MINHASH_SEED)
    for i, minhash in enumerate(hashes):
        found = lsh.query(minhash)
        if found:
            later += [i] * len(found)
            earlier += sorted(found)
        lsh.insert(i, minhash, check_duplication=False)
    return np.asarray(later, dtype=np.int64), np.asarray(earlier, dtype=np.int64)


def near_pairs(matrix, texts: list[str], threshold: float) -> dict[int, list[tuple[int, float]]]:
    """Row i -> [(earlier row j, cosine)] for every pair at or above ``threshold``.

    ``matrix``: L2-normalised TF-IDF rows of ``texts`` (so a row dot product is a cosine).
    """
    later, earlier = candidate_pairs(texts)
    out: dict[int, list[tuple[int, float]]] = {}
    for start in range(0, len(later), VERIFY_CHUNK):
        i, j = later[start:start + VERIFY_CHUNK], earlier[start:start + VERIFY_CHUNK]
        cos = np.asarray(matrix[i].multiply(matrix[j]).sum(axis=1)).ravel()
        for a, b, c in zip(i[cos >= threshold - 1e-12], j[cos >= threshold - 1e-12],
                           cos[cos >= threshold - 1e-12], strict=True):
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
