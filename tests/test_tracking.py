"""MLflow tracking against a real sqlite store: parent run per pipeline, nested stage runs,
tags, params, headline metrics, redaction of secrets, and the parent race."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
    """A project root with params.yaml, the store in it, a fake key in the environment."""
    (store / "params.yaml").write_text(PARAMS)
    (store / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(store)
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "WIZARDCODER_MLFLOW", "DVC_EXP_NAME",
                "WIZARDCODER_PARAMS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WIZARDCODER_ROOT", str(store))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(store / "cache"))
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", BASELINE)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return store


def client():
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri())
    return mlflow.MlflowClient()


def runs_of(exp_name: str) -> list:
    c = client()
    exp = c.get_experiment_by_name(tracking.EXPERIMENT_NAME)
    return c.search_runs([exp.experiment_id], f"tags.dvc_exp_name = '{exp_name}'")


def run_stages(*stages: str) -> None:
    for stage in stages:
        with tracking.stage_run(stage, {"llm": {"api_key_env": "OPENAI_API_KEY"},
                                        "stage": {"n": 1}},
                                tags={"note": f"key is {SECRET}"}) as run:
            if stage == "score":
                run.log_metrics({"pass@1": 0.25, "plus_pass@1": 0.125, "tasks": 4,
                                 "benchmark": "humaneval"})
            elif stage == "train":
                run.log_metrics({"loss": 2.0}, step=1)
                run.log_metrics({"train_loss": 1.5, "train_runtime_s": 3})
            else:
                run.log_metrics({"rows": 2, "rows_read": 3})


def test_stages_of_one_pipeline_share_one_parent(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-one")
    run_stages("seed", "train", "score")
    runs = runs_of("exp-one")
    parents = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "pipeline"]
    stages = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "stage"]
    assert len(parents) == 1 and len(stages) == 3
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {parent.info.run_id}
    assert sorted(r.data.tags["stage"] for r in stages) == ["score", "seed", "train"]
    assert sorted(r.info.run_name for r in stages) == ["exp-one/score", "exp-one/seed",
                                                      "exp-one/train"]
    digest = tracking.params_sha256(project / "params.yaml")
    key = tracking.pipeline_key("exp-one", BASELINE, digest)
    for run in (parent, *stages):
        tags = run.data.tags
        assert tags["pipeline_key"] == key and tags["params_sha256"] == digest
        assert tags["dvc_exp_name"] == "exp-one" and tags["dvc_baseline_rev"] == BASELINE
    assert parent.info.run_name == "exp-one" and parent.info.status == "FINISHED"
    # every params.yaml section, flattened, once on the parent
    assert parent.data.params == {"seed.limit": "2", "llm.api_key_env": "OPENAI_API_KEY",
                                  "llm.model": "m", "rounds.r1": "a"}
    # headline metrics copied up: score unprefixed, the others prefixed with the stage
    assert parent.data.metrics["pass_at_1"] == 0.25 and parent.data.metrics["tasks"] == 4
    assert parent.data.metrics["plus_pass_at_1"] == 0.125
    assert parent.data.metrics["seed.rows"] == 2
    assert parent.data.metrics["train.train_loss"] == 1.5
    assert "train.loss" not in parent.data.metrics  # step-wise curves stay on the stage run
    assert "seed.rows_read" not in parent.data.metrics


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
    (three,) = [r for r in runs_of("exp-three") if r.data.tags[tracking.ROLE_TAG] == "pipeline"]
    assert three.info.run_id not in {r.info.run_id for r in parents}


def test_secrets_are_never_logged(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-secret")
    (project / "params.yaml").write_text(PARAMS + f"extra:\n  api_key: {SECRET}\n")
    run_stages("seed", "score")
    runs = runs_of("exp-secret")
    assert len(runs) == 3
    for run in runs:
        blob = json.dumps({"params": run.data.params, "tags": run.data.tags})
        assert SECRET not in blob and SECRET[:12] not in blob
    (parent,) = [r for r in runs if r.data.tags[tracking.ROLE_TAG] == "pipeline"]
    assert parent.data.params["extra.api_key"] == tracking.REDACTED
    assert parent.data.params["llm.api_key_env"] == "OPENAI_API_KEY"  # a name is kept
    stage = next(r for r in runs if r.data.tags.get("stage") == "seed")
    assert stage.data.tags["note"] == f"key is {tracking.REDACTED}"


def test_failed_stage_marks_the_parent_failed(project, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-fail")
    with pytest.raises(RuntimeError), tracking.stage_run("train", {"train": {}}):
        raise RuntimeError("boom")
    runs = runs_of("exp-fail")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
    run_stages("train")  # the rerun reuses the parent and finishes it
    parent = next(r for r in runs_of("exp-fail")
                  if r.data.tags[tracking.ROLE_TAG] == "pipeline")
    assert parent.info.status == "FINISHED"


def test_lost_race_keeps_the_oldest_parent(project, monkeypatch):
    """Two machines (no shared lock) create a parent for one key: both end up on the older."""
    c = client()
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
    winner = tracking.find_or_create_parent(c, exp_id, tags, {"a": 1})
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
    procs = [subprocess.Popen([sys.executable, "-c", code, stage], cwd=project, env=env,
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
    with tracking.stage_run("seed", {"seed": {}}) as run:
        run.log_metrics({"rows": 1})
        assert not run.active
    assert not (tmp_path / "mlflow.db").exists()


def test_redact_blanks_secret_names_and_values(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdefgh123")
    flat = tracking.redact({"a": {"api_key": "x1", "max_tokens": 5, "url": "u?t=tok-abcdefgh123"},
                            "b": None})
    assert flat == {"a.api_key": tracking.REDACTED, "a.max_tokens": "5",
                    "a.url": f"u?t={tracking.REDACTED}", "b": "null"}


def screenshot_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import screenshot_mlflow
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return screenshot_mlflow


def colourful_pixels(png: Path) -> int:
    """Pixels that are neither white, grey nor black: drawn content, not a blank page."""
    import matplotlib.image

    img = matplotlib.image.imread(str(png))[..., :3]
    spread = img.max(axis=2) - img.min(axis=2)
    return int((spread > 0.15).sum())
