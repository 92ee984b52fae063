"""`wizardcoder exp ...` and evol-stop: overrides, grid commands, the dev set, round selection.

The fast tests drive real DVC (`dvc exp run --queue`, `dvc queue start`, `dvc exp show
--json`) on a toy repository whose one stage turns params into metrics in a few
milliseconds; the queued grid over the real pipeline is in tests/test_pipeline_e2e.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wizardcoder.benchmarks import devset
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.experiments import commands as experiments
from wizardcoder.experiments.config import SelectConfig
from wizardcoder.experiments.selection import format_selection, select_rounds
from wizardcoder.jsonl import write_jsonl

REPO = Path(__file__).resolve().parents[1]

PARAMS = {
    "rounds": {"r1": "data/seed.jsonl", "r2": "data/evolved/r1.jsonl"},
    "merge": {"baseline": "none"},
    "evolve": {"methods": {"add_constraints": 1.0, "erroneous_code": 1.0,
                           "higher_complexity": 0.0}},
    "select": {"dev_benchmark": "seed_dev", "metric": "pass@1", "tolerance": 0.0},
}
# The toy stage: dev pass@1 by round count (best at 2 and 3: the tie goes to 2); the
# reported score is best at 3, which selection must ignore.
TOY_STAGE = """\
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
n, base = len(p["rounds"]), p["merge"]["baseline"]
dev = {1: 0.25, 2: 0.5, 3: 0.5}[n] if base == "none" else 0.75
os.makedirs("metrics/details", exist_ok=True)
# The pipeline's shapes: headline metrics, and details that are outputs, not metrics.
json.dump({"benchmark": "humaneval", "pass@1": n / 10, "pass@1_low": 0.0,
           "pass@1_high": n / 5}, open("metrics/score.json", "w"))
json.dump({"dev_benchmark": "seed_dev", "dev_pass@1": dev}, open("metrics/dev_score.json", "w"))
json.dump({"train_loss": 1.5 - n / 10}, open("metrics/train.json", "w"))
json.dump({"rows": 8 * n, "tokens_est": 1000 * n}, open("metrics/merge.json", "w"))
json.dump({"rows": 8 * n, "removed_near_duplicate": n}, open("metrics/details/merge.json", "w"))
"""
TOY_DVC = {"stages": {"toy": {
    "cmd": "python toy.py", "deps": ["toy.py"], "params": ["rounds", "merge", "evolve"],
    "outs": [{"metrics/details/merge.json": {"cache": False}}],
    "metrics": [{f"metrics/{name}.json": {"cache": False}}
                for name in ("score", "dev_score", "train", "merge")]}}}


def sh(cmd, cwd, check=True, timeout=300):
    """Run a shell command; `python` means this interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update({"PYTHONPATH": str(REPO), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                "WIZARDCODER_MLFLOW": "0"})
    cmd = cmd.replace("python -m", f"{sys.executable} -m")
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if check and proc.returncode:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{out[-4000:]}")
    return out


def write_params(path: Path, data: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(data or PARAMS, sort_keys=False))
    return path


# --- overrides and commands ----------------------------------------------------------------

def test_rounds_overrides_from_the_current_params(tmp_path):
    params = str(write_params(tmp_path / "params.yaml"))
    assert experiments.rounds_overrides(params, 4) == ["+rounds.r3=data/evolved/r2.jsonl",
                                                       "+rounds.r4=data/evolved/r3.jsonl"]
    assert experiments.rounds_overrides(params, 1) == ["~rounds.r2"]
    assert experiments.rounds_overrides(params, 2) == []
    with pytest.raises(ConfigError, match="seed_only"):
        experiments.rounds_overrides(params, 0)
    args = experiments.exp_run_args(["~rounds.r2"], name="r-1", queue=True)
    assert args == ["exp", "run", "--queue", "--name", "r-1", "-S", "~rounds.r2"]
    assert experiments.dvc_command(args) == "dvc exp run --queue --name r-1 -S '~rounds.r2'"


def test_grid_entries_cover_rounds_baselines_and_ablations(tmp_path):
    params = str(write_params(tmp_path / "params.yaml"))
    entries = experiments.grid_entries(params, [3, 1, 2], ["seed_only", "equal_size"],
                                       ablate_methods=True, prefix="g-")
    got = {e.name: e.overrides for e in entries}
    r3 = ["+rounds.r3=data/evolved/r2.jsonl"]
    assert got == {
        "g-rounds-1": ["~rounds.r2"], "g-rounds-2": [], "g-rounds-3": r3,
        "g-seed-only": ["~rounds.r2", "merge.baseline=seed_only"],
        "g-equal-size-r1": ["~rounds.r2", "merge.baseline=equal_size"],
        "g-equal-size-r2": ["merge.baseline=equal_size"],
        "g-equal-size-r3": r3 + ["merge.baseline=equal_size"],
        "g-no-add-constraints-r3": r3 + ["evolve.methods.add_constraints=0"],
        "g-no-erroneous-code-r3": r3 + ["evolve.methods.erroneous_code=0"],
    }
    off = dict(PARAMS, merge={"baseline": "seed_only"})
    entries = experiments.grid_entries(str(write_params(tmp_path / "p2.yaml", off)), [2])
    assert [(e.name, e.overrides) for e in entries] == [("rounds-2", ["merge.baseline=none"])]
    for bad in ([], [0, 1], [2, 2]):
        with pytest.raises(ConfigError, match="distinct round counts"):
            experiments.grid_entries(params, bad)
    one = dict(PARAMS, evolve={"methods": {"add_constraints": 1.0, "erroneous_code": 0}})
    with pytest.raises(ConfigError, match="two enabled methods"):
        experiments.grid_entries(str(write_params(tmp_path / "p3.yaml", one)), [1], None, True)


def test_grid_verify_adds_a_verified_twin_per_round_count(tmp_path):
    params = str(write_params(tmp_path / "params.yaml"))
    entries = experiments.grid_entries(params, [1, 2], verify=True)
    assert {e.name: e.overrides for e in entries} == {
        "rounds-1": ["~rounds.r2"], "rounds-2": [],
        "verified-rounds-1": ["~rounds.r2", "evolve.verify=tests"],
        "verified-rounds-2": ["evolve.verify=tests"]}
    # A workspace that already verifies: the unverified twins switch it off.
    on = dict(PARAMS, evolve={**PARAMS.get("evolve", {}), "verify": "tests"})
    entries = experiments.grid_entries(str(write_params(tmp_path / "p2.yaml", on)), [2],
                                       verify=True)
    assert {e.name: e.overrides for e in entries} == {
        "rounds-2": ["evolve.verify=none"], "verified-rounds-2": []}


# --- the dev set ---------------------------------------------------------------------------

def test_dev_tasks_are_held_out_seed_tasks_whose_references_pass_their_checks():
    sys.path.insert(0, str(REPO / "tests"))
    from seed_task_checks import CHECKS, build_dev_task

    from wizardcoder.sandbox import SandboxLimits, evaluate_samples

    seeds = [json.loads(line) for line in
             (REPO / "wizardcoder/resources/seed_tasks.jsonl").open()]
    tasks = devset.seed_dev_tasks()
    assert len(tasks) == 12
    for task in tasks.values():   # the resource is exactly what build_dev_task makes today
        i = task["seed_index"]
        assert task == build_dev_task(i, seeds[i], CHECKS[i])
    samples = [{"task_id": t, "solution": p["canonical_solution"]} for t, p in tasks.items()]
    samples += [{"task_id": t, "solution": p["prompt"] + "    return None\n"}
                for t, p in tasks.items()]
    verdicts = evaluate_samples(tasks, samples, SandboxLimits(), workers=2, progress=False)
    assert [v.passed for v in verdicts] == [True] * 12 + [False] * 12


def test_dev_score_stage_scores_a_sample_file(tmp_path, monkeypatch):
    from wizardcoder.experiments import dev

    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    tasks = list(devset.seed_dev_tasks().values())[:4]
    rows = [{"type": "header", "benchmark": "seed_dev", "task_ids": [t["task_id"] for t in tasks]}]
    for i, task in enumerate(tasks):   # two right, two wrong
        code = task["canonical_solution"] if i < 2 else task["prompt"] + "    return 0\n"
        rows.append({"type": "sample", "task_id": task["task_id"], "raw": [code],
                     "solution": [code]})
    write_jsonl(tmp_path / "samples.jsonl", rows)
    params = tmp_path / "params.yaml"
    params.write_text("score:\n  workers: 1\n")
    summary = dev.score(str(params), str(tmp_path / "samples.jsonl"),
                        str(tmp_path / "dev.json"), str(tmp_path / "results.jsonl"))
    assert {k: summary[k] for k in ("benchmark", "pass@1", "tasks", "samples")} == {
        "benchmark": "seed_dev", "pass@1": 0.5, "tasks": 4, "samples": 4}
    assert summary["kinds"]["passed"] == 2
    assert json.loads((tmp_path / "dev.json").read_text()) == summary


@pytest.mark.parametrize("merge, expected", [
    ("", {"rounds": 2, "training_data": "evolved"}),
    ("merge:\n  baseline: seed_only\n", {"rounds": 0, "training_data": "seed_only"}),
    ("merge:\n  baseline: equal_size\n", {"rounds": 2, "training_data": "equal_size"}),
])
def test_log_stage_writes_the_passk_vs_rounds_point(tmp_path, monkeypatch, merge, expected):
    """The score stages read no round params (adding a round must not rerun the sandbox):
    the log stage turns their metrics into this experiment's point."""
    from wizardcoder.experiments import dev
    from wizardcoder.log.stage import write_rounds_points

    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    task = next(iter(devset.seed_dev_tasks().values()))
    write_jsonl(tmp_path / "samples.jsonl", [
        {"type": "header", "benchmark": "seed_dev", "task_ids": [task["task_id"]]},
        {"type": "sample", "task_id": task["task_id"], "raw": [""],
         "solution": [task["canonical_solution"]]}])
    params = tmp_path / "params.yaml"
    params.write_text("score:\n  workers: 1\n  ks: [1]\nrounds:\n  r1: data/seed.jsonl\n"
                      "  r2: data/evolved/r1.jsonl\n" + merge)
    dev.score(str(params), str(tmp_path / "samples.jsonl"), str(tmp_path / "dev.json"),
              str(tmp_path / "results.jsonl"))
    write_rounds_points(params, {str(tmp_path / "dev.json"): str(tmp_path / "point.json"),
                                 str(tmp_path / "absent.json"): str(tmp_path / "none.json")})
    point = json.loads((tmp_path / "point.json").read_text())
    assert point == [{**expected, "pass_at_1": 1.0}]
    assert not (tmp_path / "none.json").exists()  # no score, no point


def test_rounds_points_with_broken_rounds_fail_before_writing(tmp_path):
    from wizardcoder.log.stage import write_rounds_points

    (tmp_path / "dev.json").write_text('{"pass@1": 0.5}')
    params = tmp_path / "params.yaml"
    params.write_text("rounds:\n  first: data/seed.jsonl\n")
    with pytest.raises(ConfigError, match="rounds"):
        write_rounds_points(params, {str(tmp_path / "dev.json"): str(tmp_path / "point.json")})
    assert not (tmp_path / "point.json").exists()


def test_mbpp_plus_dev_set_is_scored_against_reference_outputs(tmp_path, monkeypatch):
    """select.dev_benchmark: mbpp+ (a two-task MbppPlus file stands in for evalplus's)."""
    from wizardcoder.experiments import dev

    mbpp = [{"task_id": "Mbpp/3", "prompt": '"""\nIs n not prime?\n"""\n',
             "entry_point": "is_not_prime", "contract": "", "atol": 0, "test": "",
             "canonical_solution": "def is_not_prime(n):\n    return n < 2 or any(n % d == 0 "
                                   "for d in range(2, int(n ** 0.5) + 1))\n",
             "base_input": [[4], [13]], "plus_input": [[1], [7919]]},
            {"task_id": "Mbpp/9", "prompt": '"""\nDouble x.\n"""\n', "entry_point": "double",
             "contract": "", "atol": 0, "test": "",
             "canonical_solution": "def double(x):\n    return 2 * x\n",
             "base_input": [[1], [2]], "plus_input": [[-3]]}]
    write_jsonl(tmp_path / "MbppPlus.jsonl", mbpp)
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(tmp_path / "MbppPlus.jsonl"))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    assert list(devset.dev_problems("mbpp+", limit=1)) == ["Mbpp/3"]
    rows = [{"type": "header", "benchmark": "mbpp+"},
            {"type": "sample", "task_id": "Mbpp/3", "solution": [mbpp[0]["canonical_solution"]]},
            {"type": "sample", "task_id": "Mbpp/9", "solution": ["def double(x):\n    "
                                                                 "return x + x if x > 0 else 0\n"]}]
    write_jsonl(tmp_path / "samples.jsonl", rows)
    params = tmp_path / "params.yaml"
    params.write_text("score:\n  workers: 1\n  plus_memory_mb: 1024\n")
    summary = dev.score(str(params), str(tmp_path / "samples.jsonl"),
                        str(tmp_path / "dev.json"), str(tmp_path / "results.jsonl"))
    assert summary["benchmark"] == "mbpp+" and summary["pass@1"] == 1.0
    assert summary["plus_pass@1"] == 0.5          # double() fails the plus input -3
    assert SelectConfig(metric="plus_pass@1").metric == "plus_pass@1"


def test_select_config_validates(tmp_path):
    from wizardcoder.config import load_section

    params = tmp_path / "params.yaml"
    params.write_text("select:\n  metric: accuracy\n")
    with pytest.raises(ConfigError, match="select.metric: expected a pass@k or plus_pass@k key"):
        load_section(params, "select", SelectConfig)
    params.write_text("select:\n  dev_benchmark: humaneval\n")
    with pytest.raises(ConfigError, match="not one of"):
        load_section(params, "select", SelectConfig)


# --- a toy DVC repo: exp rounds -> exp show --json -> select-rounds -------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    repo = tmp_path_factory.mktemp("toy")
    write_params(repo / "params.yaml")
    (repo / "toy.py").write_text(TOY_STAGE)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(TOY_DVC, sort_keys=False))
    sh("git init -q && python -m dvc init -q && git add -A && git commit -qm init", repo)
    # Each run starts from the workspace the last one left: the overrides are relative to it.
    log = "".join(sh(f"python -m wizardcoder exp rounds {n} --name rounds-{n}", repo)
                  for n in (1, 3, 2))
    log += sh("python -m dvc exp run --name seed-only -S merge.baseline=seed_only", repo)
    show = json.loads(sh("python -m dvc exp show --json --no-pager", repo))
    return repo, log, show


def test_exp_rounds_prints_and_runs_the_dvc_commands(toy):
    repo, log, show = toy
    for line in ("$ dvc exp run --name rounds-1 -S '~rounds.r2'",
                 "$ dvc exp run --name rounds-3 -S +rounds.r2=data/evolved/r1.jsonl -S "
                 "+rounds.r3=data/evolved/r2.jsonl",
                 "$ dvc exp run --name rounds-2 -S '~rounds.r3'"):
        assert line in log, log
    names = {e["name"]: e["revs"][0]["data"] for e in show[1]["experiments"]}
    assert set(names) == {"rounds-1", "rounds-2", "rounds-3", "seed-only"}
    assert len(names["rounds-3"]["params"]["params.yaml"]["data"]["rounds"]) == 3
    dev = names["seed-only"]["metrics"]["metrics/dev_score.json"]["data"]
    assert dev["dev_pass@1"] == 0.75


def test_select_rounds_uses_the_dev_set_and_prefers_fewer_rounds(toy):
    repo = toy[0]
    log = sh("python -m wizardcoder exp select-rounds", repo)
    record = json.loads((repo / "metrics/round_selection.json").read_text())
    assert record["chosen_rounds"] == 2 and record["chosen_experiment"] == "rounds-2"
    assert [(c["rounds"], c["dev_score"]) for c in record["candidates"]] == [
        (1, 0.25), (2, 0.5), (3, 0.5)]
    assert record["candidates"][2]["reported_not_used"]["pass@1"] == 0.3   # best, not used
    assert record["tied_rounds"] == [2, 3]
    excluded = {e["experiment"]: e["reason"] for e in record["excluded"]}
    assert "merge.baseline" in excluded["seed-only"]     # 0.75 on dev, but a baseline
    assert any("no metrics/dev_score.json" in r for r in excluded.values())   # the commit
    assert "$ dvc exp show --json --no-pager" in log and "dvc exp apply rounds-2" in log
    assert "<- chosen" in log


def test_selection_rules_on_real_exp_show_output(toy):
    show = toy[2]
    select = SelectConfig(tolerance=0.3)
    assert select_rounds(show, select)["chosen_rounds"] == 1      # 0.25 is within 0.3 of 0.5
    edited = copy.deepcopy(show)
    exps = {e["name"]: e for e in edited[1]["experiments"]}
    exps["rounds-2"]["executor"] = {"state": "failed"}
    exps["rounds-3"]["revs"][0]["data"]["metrics"]["metrics/dev_score.json"]["data"][
        "dev_benchmark"] = "mbpp+"
    record = select_rounds(edited, SelectConfig())
    assert record["chosen_rounds"] == 1 and [c["rounds"] for c in record["candidates"]] == [1]
    reasons = {e["experiment"]: e["reason"] for e in record["excluded"]}
    assert "state failed" in reasons["rounds-2"] and "'mbpp+'" in reasons["rounds-3"]
    exps["rounds-1"]["revs"][0]["data"]["metrics"]["metrics/dev_score.json"]["data"][
        "dev_benchmark"] = "humaneval"   # dev == the reported benchmark: not held out
    with pytest.raises(DataError, match="no finished experiment"):
        select_rounds(edited, SelectConfig())
    assert "rounds-1" in format_selection(select_rounds(show, SelectConfig()))


def test_compare_table_holds_every_headline_number_and_the_params_that_differ(toy):
    header, rows = experiments.compare_table(toy[2])
    # Every key of every metrics file, unprefixed as `dvc exp show` prints them (train_loss
    # and tokens_est included), then only the params that differ between the rows.
    assert header[:10] == ["experiment", "benchmark", "pass@1", "pass@1_low", "pass@1_high",
                           "dev_benchmark", "dev_pass@1", "train_loss", "rows", "tokens_est"]
    assert sorted(header[10:]) == ["merge.baseline", "rounds.r2", "rounds.r3"]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(table) >= {"workspace", "rounds-1", "rounds-2", "rounds-3", "seed-only"}
    assert table["rounds-3"]["pass@1"] == pytest.approx(0.3)
    assert table["rounds-3"]["tokens_est"] == 3000 and table["rounds-1"]["rounds.r2"] is None
    assert table["seed-only"]["merge.baseline"] == "seed_only"
    header, rows = experiments.compare_table(toy[2], ["rounds-1"])
    assert [r[0] for r in rows] == ["rounds-1"] and "rounds.r2" not in header


def test_compare_and_rounds_commands_on_the_toy_repo(toy):
    repo = toy[0]
    log = sh("python -m wizardcoder exp compare", repo)
    assert "$ dvc exp show --json --no-pager" in log
    lines = log.splitlines()
    head = next(line for line in lines if line.startswith("experiment"))
    for column in ("pass@1", "dev_pass@1", "train_loss", "tokens_est", "rounds.r3"):
        assert column in head.split(), (column, head)
    assert "removed_near_duplicate" not in log and "dvc metrics diff" not in log
    assert any(line.startswith("rounds-3 ") and " 0.3 " in line for line in lines), log
    log = sh("python -m wizardcoder exp compare --diff rounds-1 rounds-3", repo)
    assert "$ dvc metrics diff rounds-1 rounds-3" in log
    assert "$ dvc metrics diff rounds-1 rounds-3 --targets metrics/details" in log
    assert "removed_near_duplicate" in log   # the details: asked for
    log = sh("python -m wizardcoder exp rounds 4 --queue --name four", repo)
    assert ("$ dvc exp run --queue --name four -S +rounds.r3=data/evolved/r2.jsonl "
            "-S +rounds.r4=data/evolved/r3.jsonl") in log
    assert "Queued experiment 'four' for future execution." in log


def test_parse_queue_status():
    text = ("Task     Name       Created    Status\n9ff7e94  rounds-2   04:31 AM   Success\n"
            "1a2b3c4  rounds-2   04:40 AM   Running\n9c6fce7  seed-only  Nov 23, 2026   Failed\n"
            "\nWorker status: 1 active, 0 idle\n")
    assert experiments.parse_queue_status(text) == {"rounds-2": "Running", "seed-only": "Failed"}


# --- the real pipeline's metrics (the session's reproduced workspace) ---------------------

@pytest.mark.slow
def test_dvc_exp_show_holds_only_the_headline_metrics(pipeline):
    """`dvc exp show` on the reproduced pipeline: the documented headline keys only, each
    unique across the metrics files (so DVC prints it without a file prefix): 10 + 4 per
    round, 18 for the shipped two rounds (was about 150 per round); every other figure is in
    the details files."""
    from wizardcoder.config import flatten

    repo, env, dvc, _ = pipeline
    show = json.loads(subprocess.run(f"{dvc} exp show --json --no-pager", cwd=repo, env=env,
                                     shell=True, capture_output=True, text=True,
                                     check=True).stdout)
    metrics = {path: set(flatten(entry["data"], keep_empty=False))
               for path, entry in show[0]["data"]["metrics"].items()}
    rounds = yaml.safe_load((repo / "params.yaml").read_text())["rounds"]
    expected = {
        **{f"metrics/evolve/{key}.json": {f"{key}_{name}" for name in
                                           ("kept", "calls", "tokens", "cost_usd")}
           for key in rounds},
        "metrics/merge.json": {"rows", "tokens_est"},
        "metrics/train.json": {"train_loss"},
        "metrics/score.json": {"humaneval.pass@1", "humaneval.pass@1_low",
                               "humaneval.pass@1_high"},
        "metrics/dev_score.json": {"dev_benchmark", "dev_pass@1", "dev_pass@1_low",
                                   "dev_pass@1_high"}}
    assert metrics == expected
    columns = [key for keys in metrics.values() for key in keys]
    assert len(columns) == len(set(columns)) == 10 + 4 * len(rounds)
    details = json.loads((repo / "metrics/details/evolve/r1.json").read_text())
    assert details["kept"] == show[0]["data"]["metrics"]["metrics/evolve/r1.json"]["data"][
        "r1_kept"] and "by_method" in details and "dropped_by_rule" in details
    merge = json.loads((repo / "metrics/details/merge.json").read_text())
    assert "removed_near_duplicate" in merge and "dedup_removed" in merge
    score = json.loads((repo / "metrics/details/score.json").read_text())
    assert "kinds" in score["humaneval"] and "isolation" in score["humaneval"]
    assert json.loads((repo / "metrics/rounds_verify.json").read_text()) == []  # verify: none
