"""MBPP the paper's way: the bundled 500 test tasks, WizardCoder's prompt, sandboxed verdicts
through `wizardcoder score --benchmark mbpp`, several benchmarks per experiment."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from wizardcoder.benchmarks import mbpp
from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.generate.config import GenerateConfig
from wizardcoder.generate.runner import prompt_text
from wizardcoder.jsonl import read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_SHA256 = "b57729f5022b7d2e628f5b3602e6fb4f8f4419743f0b1aadb08201558e920407"


def wizardcoder(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env_cmd = [sys.executable, "-m", "wizardcoder", *args]
    return subprocess.run(env_cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**_env(), "PYTHONPATH": str(ROOT)})


def _env() -> dict:
    import os

    return {**os.environ, "WIZARDCODER_MLFLOW": "0"}


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return load_benchmark("mbpp")


def test_the_500_test_tasks_are_bundled_byte_for_byte(problems):
    assert hashlib.sha256(mbpp.bundled_path().read_bytes()).hexdigest() == BUNDLED_SHA256
    assert list(problems) == [f"Mbpp/{i}" for i in range(11, 511)]
    assert all(len(p["test_list"]) == 3 and p["entry_point"] for p in problems.values())
    assert list(load_benchmark("mbpp", limit=2)) == ["Mbpp/11", "Mbpp/12"]


def test_instruction_prompt_is_wizardcoders_text_then_test_examples(problems):
    text = prompt_text(problems["Mbpp/11"], "instruction")
    assert text == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nCreate a Python script for this problem:\n"
        "Write a python function to remove first and last occurrence of a given character "
        "from the string.\nTest examples:\nassert remove_Occ(\"hello\",\"l\") == \"heo\"\n"
        "assert remove_Occ(\"abcda\",\"a\") == \"bcd\"\nassert remove_Occ(\"PHP\",\"P\") == "
        "\"H\"\n\n### Response:")
    # Only task 493's 4,145 characters of examples become its call signature, as WizardCoder
    # did by hand.
    long = [t for t, p in problems.items() if "assert" not in p["instruction"]]
    assert long == ["Mbpp/493"]
    assert problems["Mbpp/493"]["instruction"].endswith(
        "Test examples:\ncalculate_polygons(startx, starty, endx, endy, radius)")
    # The completion format is a docstring a base model continues: every one compiles.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a regex's "\w" in a plain docstring warns
        for problem in problems.values():
            compile(problem["prompt"] + "pass\n", problem["task_id"], "exec")
    assert prompt_text(problems["Mbpp/11"], "completion").startswith('r"""\nWrite a python')


def test_setup_code_runs_in_the_sandbox_with_the_calls_that_need_it(problems):
    problem = problems["Mbpp/367"]  # trees of the program's own Node class
    assert problem["harness_entry_point"] == mbpp.SETUP_CALL
    assert "mbpp_setup_call(0) == False" in problem["test"]
    assert "root2 = Node(1)" in problem["program_suffix"]
    assert "lambda: is_tree_balanced(root1)," in problem["program_suffix"]
    assert "program_suffix" not in problems["Mbpp/11"]


def test_bad_mbpp_files_name_file_line_and_field(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    write_jsonl(path, [{"task_id": 11, "text": "t", "code": "def f(): pass",
                        "test_list": "assert f() is None"}])
    with pytest.raises(DataError, match=r"mbpp.jsonl:1: field 'test_list': expected a "
                                        r"non-empty list"):
        mbpp.read_rows(path)
    path.write_text('{"task_id": "11", "text": "t", "code": "", "test_list": ["x"]}\n')
    with pytest.raises(DataError, match=r"field 'task_id': expected an integer"):
        mbpp.read_rows(path)


def test_generate_config_names_the_benchmarks():
    config = from_dict(GenerateConfig, {"benchmarks": ["humaneval", "mbpp"]}, "generate")
    assert config.benchmarks == ["humaneval", "mbpp"]
    with pytest.raises(ConfigError, match=r"generate.benchmarks: 'mbbp' is not one of"):
        from_dict(GenerateConfig, {"benchmarks": ["mbbp"]}, "generate")
    with pytest.raises(ConfigError, match="generate.benchmarks: expected a non-empty list"):
        from_dict(GenerateConfig, {"benchmarks": ["mbpp", "mbpp"]}, "generate")
    with pytest.raises(ConfigError, match="generate.task_ids: expected an empty list when "
                                          "several benchmarks"):
        from_dict(GenerateConfig, {"benchmarks": ["humaneval", "mbpp"],
                                   "task_ids": ["Mbpp/11"]}, "generate")


def _broken(problem: dict) -> str:
    return (f"{problem['canonical_solution']}\n\ndef {problem['entry_point']}(*a, **k):\n"
            "    return None\n")


def test_every_canonical_solution_passes_and_broken_ones_fail_through_the_cli(
        problems, tmp_path):
    """All 500 canonical solutions (docs/benchmarks.md: none is excluded), as external
    evalplus-style samples with no header: 500 Mbpp/ ids mean MBPP, not MBPP+."""
    rows = [{"task_id": t, "solution": p["canonical_solution"]} for t, p in problems.items()]
    write_jsonl(tmp_path / "canon.jsonl", rows)
    # Mbpp/123 takes ~1 s alone, tens of seconds on a machine loaded 8x: generous limits
    (tmp_path / "params.yaml").write_text("score:\n  timeout_s: 300\n  cpu_s: 300\n")
    done = wizardcoder("score", "--samples", str(tmp_path / "canon.jsonl"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "canon.score.json").read_text())
    assert (metrics["benchmark"], metrics["tasks"], metrics["pass@1"]) == ("mbpp", 500, 1.0)

    # The setup task and two others, each right and wrong; a program without the Node class
    # fails the setup (the reference's NameError), and a subset is named with --tasks.
    ids = ["Mbpp/11", "Mbpp/367", "Mbpp/493"]
    no_node = "def is_tree_balanced(root):\n    return True\n"
    rows = [{"task_id": t, "solution": s} for t in ids
            for s in (problems[t]["canonical_solution"], _broken(problems[t]))]
    rows.append({"task_id": "Mbpp/367", "solution": no_node})
    write_jsonl(tmp_path / "mixed.jsonl", rows)
    done = wizardcoder("score", "--samples", str(tmp_path / "mixed.jsonl"), "--benchmark", "mbpp",
                       "--tasks", ",".join(ids), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    verdicts = read_jsonl(tmp_path / "mixed.results.jsonl")
    assert [v["passed"] for v in verdicts] == [True, False, True, False, True, False, False]
    assert verdicts[-1]["kind"] == "error" and "Node" in verdicts[-1]["detail"]


def test_an_unknown_benchmark_in_a_header_is_a_clear_error(tmp_path):
    write_jsonl(tmp_path / "s.jsonl", [
        {"type": "header", "benchmark": "mbpp-typo"}, {"task_id": "Mbpp/11", "solution": "x"}])
    done = wizardcoder("score", "--samples", str(tmp_path / "s.jsonl"), cwd=tmp_path)
    assert done.returncode == 2 and "'mbpp-typo' is not a benchmark" in done.stderr
    assert not (tmp_path / "s.score.json").exists()


def test_generate_and_score_several_benchmarks_through_the_stage_entry_points(tmp_path):
    """`generate.benchmarks: [humaneval, mbpp]`: one samples file per benchmark from a real
    OpenAI-compatible server, then one results file and one metrics entry per benchmark."""
    from tests.fake_openai import FaultServer, Reply

    mbpp_tasks = load_benchmark("mbpp", limit=2)

    def answer(body: dict) -> Reply:  # MBPP tasks: their canonical solution; HumanEval: junk
        prompt = body["messages"][-1]["content"]
        task = next((p for p in mbpp_tasks.values() if p["instruction"] in prompt), None)
        code = task["canonical_solution"] if task else "def nothing():\n    pass"
        return Reply(f"```python\n{code}\n```")

    with FaultServer(responder=answer) as server:
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump({
            "generate": {"benchmarks": ["humaneval", "mbpp"], "limit": 2, "backend": "openai",
                         "base_url": server.url, "model": "m", "openai_api": "chat",
                         "max_new_tokens": 64},
            "score": {"workers": 1}}))
        done = subprocess.run(
            [sys.executable, "-m", "stages.generate", "--params", str(params), "--model", "m",
             "--out", str(tmp_path / "samples")], cwd=ROOT, capture_output=True, text=True,
            env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert files == ["humaneval.jsonl", "mbpp.jsonl"]
    header = read_jsonl(tmp_path / "samples" / "mbpp.jsonl")[0]
    assert header["benchmark"] == "mbpp" and header["task_ids"] == ["Mbpp/11", "Mbpp/12"]
    assert "benchmarks" not in header["settings"]  # one file per benchmark, its own header
    done = subprocess.run(
        [sys.executable, "-m", "stages.score", "--params", str(params), "--samples",
         str(tmp_path / "samples"), "--metrics", str(tmp_path / "score.json"), "--details",
         str(tmp_path / "details.json"), "--results", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "score.json").read_text())
    assert set(metrics) == {"humaneval", "mbpp"}
    assert metrics["mbpp"]["pass@1"] == 1.0 and metrics["humaneval"]["pass@1"] == 0.0
    assert {"pass@1_low", "pass@1_high"} <= set(metrics["mbpp"])
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == files
    details = json.loads((tmp_path / "details.json").read_text())
    assert details["mbpp"]["tasks"] == 2 and details["mbpp"]["kinds"]["passed"] == 2


def test_merge_decontaminates_against_the_bundled_mbpp_by_default(tmp_path):
    """The `benchmarks` stage exports the bundled MBPP; merge with its default params removes
    a training row that solves an MBPP task (renamed variables, other wording) and keeps the
    others; the report names the file and its 500 tasks."""
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "stages.benchmarks"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    exported = read_jsonl(tmp_path / "data/benchmarks/mbpp.jsonl")
    assert exported == mbpp.read_rows()  # the original format, all 500 rows
    solves_11 = ("def remove_Occ(text, c):\n    first = text.find(c)\n"
                 "    if first >= 0:\n        text = text[:first] + text[first + 1:]\n"
                 "    last = text.rfind(c)\n    if last >= 0:\n"
                 "        text = text[:last] + text[last + 1:]\n    return text\n")
    rows = [{"id": f"seed-{i:012d}", "instruction": text, "input": "", "output": output,
             "lineage": {"seed_id": f"seed-{i:012d}", "parent_id": None, "round": 0}}
            for i, (text, output) in enumerate([
                ("Drop the first and the last copy of a letter in a word.", solves_11),
                ("Sort a list of words by length.",
                 "def by_len(w):\n    return sorted(w, key=len)\n"),
            ])]
    write_jsonl(tmp_path / "data/seed.jsonl", rows)
    (tmp_path / "params.yaml").write_text("rounds: {}\n")  # every merge key at its default
    done = subprocess.run(
        [sys.executable, "-m", "stages.merge", "--evolved-dir", "data/evolved"], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kept = read_jsonl(tmp_path / "data/merged/train.jsonl")
    assert [r["instruction"] for r in kept] == ["Sort a list of words by length."]
    report = json.loads((tmp_path / "data/merged/decontamination.json").read_text())
    removed = report["removed"][0]
    assert removed["benchmark_task"] == "Mbpp/11" and removed["reason"] == "execution"
    assert report["benchmark_files"]["mbpp"]["tasks"] == 500

@pytest.mark.slow
def test_an_experiment_names_the_benchmarks_it_scores(workspace):
    """`dvc exp run -S 'generate.benchmarks=[humaneval,mbpp]'` on the reproduced workspace:
    only generate and score run again (the model is restored, HumanEval's samples come back
    from the resume cache with the same bytes), MBPP gets its own samples and results files
    and its own entry in metrics/score.json, and HumanEval's entry does not move."""
    from tests.workspace import run

    repo, env, dvc = workspace
    run("git add -A && git commit -qm 'first run'", repo, env)
    before = json.loads((repo / "metrics/score.json").read_text())
    he_samples = (repo / "data/eval/samples/humaneval.jsonl").read_bytes()
    log = run(f"{dvc} exp run -n with-mbpp -S 'generate.benchmarks=[humaneval,mbpp]'", repo,
              env, timeout=1800)
    assert "Running stage 'generate'" in log and "Running stage 'score'" in log, log[-3000:]
    for upstream in ("seed", "evolve@r1", "merge", "train"):
        assert f"Running stage '{upstream}'" not in log, (upstream, log[-3000:])
    after = json.loads((repo / "metrics/score.json").read_text())
    assert set(after) == {"humaneval", "mbpp"} and after["humaneval"] == before["humaneval"]
    assert 0.0 <= after["mbpp"]["pass@1"] <= 1.0
    assert (repo / "data/eval/samples/humaneval.jsonl").read_bytes() == he_samples
    results = read_jsonl(repo / "data/eval/results/mbpp.jsonl")
    assert [r["task_id"] for r in results] == ["Mbpp/11", "Mbpp/12"]  # generate.limit: 2
    show = json.loads(run(f"{dvc} exp show --json --no-pager", repo, env))
    exp = next(e for e in show[1]["experiments"] if e["name"] == "with-mbpp")
    scores = exp["revs"][0]["data"]["metrics"]["metrics/score.json"]["data"]
    assert scores["mbpp"]["pass@1"] == after["mbpp"]["pass@1"]
