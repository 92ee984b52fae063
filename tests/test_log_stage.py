"""The log stage: params, the headline metrics of the files dvc.yaml declares as metrics,
dvc.lock hashes and datasets on the parent run, also when no other stage ran in this
execution (all restored from DVC's run-cache); nothing added when nothing changed; run by
hand, a run of its own."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wizardcoder.log.stage import headline_metrics, lock_outputs, output_digest

REPO = Path(__file__).resolve().parents[1]

LOCK = """schema: '2.0'
stages:
  merge:
    cmd: 'true'
    outs:
    - path: data/merged
      hash: md5
      md5: aaaabbbbccccdddd.dir
  score:
    cmd: 'true'
    outs:
    - path: data/eval/results
      hash: md5
      md5: 5555666677778888.dir
  log:
    cmd: 'true'
    outs:
    - path: metrics/passk_rounds.json
      hash: md5
      md5: '9999000011112222'
"""

# Two stages declaring metrics (one of them foreach, like evolve@rN); details are plain outs.
DVC_YAML = """stages:
  evolve:
    foreach: [r1]
    do:
      cmd: "true"
      metrics:
        - metrics/evolve/${item}.json:
            cache: false
  score:
    cmd: "true"
    outs:
      - data/eval/results
      - metrics/details/score.json:
          cache: false
    metrics:
      - metrics/score.json:
          cache: false
"""


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for folder in ("metrics/evolve", "metrics/details", "data/merged", "data/eval/results"):
        (root / folder).mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=root,
                   check=True, timeout=120)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "dvc.lock").write_text(LOCK)
    (root / "metrics" / "score.json").write_text(json.dumps(  # one entry per benchmark
        {"humaneval": {"pass@1": 0.25, "pass@1_low": 0.0, "pass@1_high": 0.5},
         "humaneval+": {"pass@1": 0.125}}))
    (root / "metrics" / "details" / "score.json").write_text('{"kinds": {"passed": 1}}')
    (root / "metrics" / "evolve" / "r1.json").write_text('{"r1_kept": 3, "r1_cost_usd": 0.5}')
    (root / "metrics" / "train_curve.json").write_text('[{"step": 1, "loss": 2.0}]')
    (root / "data" / "merged" / "train.jsonl").write_text('{"instruction": "x"}\n')
    for name in ("humaneval", "humaneval+"):
        (root / "data" / "eval" / "results" / f"{name}.jsonl").write_text(f'{{"b": "{name}"}}\n')
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tracking"] = {"log_model": False, "register_model": None}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_lock_hashes_and_headline_metrics(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "metrics" / "evolve").mkdir(parents=True)
    (root / "dvc.lock").write_text(LOCK)
    (root / "metrics" / "score.json").write_text('{"humaneval+": {"pass@1": 0.25}}')
    (root / "metrics" / "evolve" / "r1.json").write_text('{"r1_kept": 3, "ok": true}')
    hashes = lock_outputs(root / "dvc.lock", skip_stages=("log",))
    assert hashes == {"data/eval/results": "5555666677778888.dir",
                      "data/merged": "aaaabbbbccccdddd.dir"}
    monkeypatch.chdir(root)  # DVC names the files relative to the repository root
    names = headline_metrics(["metrics/score.json", "metrics/evolve/r1.json",
                              "metrics/not_written_yet.json"])
    assert names == {"benchmark/humaneval_plus.pass_at_1": 0.25, "evolve/r1/r1_kept": 3.0}
    # a file inside an output directory: the md5 of its bytes, as DVC hashes a file
    train = root / "data" / "merged" / "train.jsonl"
    train.parent.mkdir(parents=True)
    train.write_text('{"instruction": "x"}\n')
    digest = output_digest(str(train), {str(train.parent): "x.dir"})
    assert digest == hashlib.md5(train.read_bytes()).hexdigest()
    assert output_digest(str(root / "nowhere.jsonl"), hashes) is None


def _log(root: Path, tmp_path: Path, stage: str | None, **extra) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "WIZARDCODER_ROOT": str(root), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "WIZARDCODER_CACHE_DIR": str(tmp_path / "cache"), **extra}
    if stage:
        env["DVC_STAGE"] = stage  # what DVC sets for the stage's command
    done = subprocess.run([sys.executable, "-m", "wizardcoder", "log", "--rounds-plot",
                           "metrics/score.json", "metrics/passk_rounds.json"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _runs(root: Path) -> list[dict]:
    import mlflow

    c = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return [{"experiment": e.name, "metrics": r.data.metrics, "tags": r.data.tags,
             "params": r.data.params,
             "inputs": sorted([d.dataset.name, d.dataset.digest, d.dataset.source,
                               d.tags[0].value] for d in r.inputs.dataset_inputs)}
            for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]


@pytest.mark.slow
def test_log_stage_fills_the_parent_run_once(tmp_path):
    root = _checkout(tmp_path)
    _log(root, tmp_path, "log")
    points = json.loads((root / "metrics" / "passk_rounds.json").read_text())
    assert [(p["benchmark"], p["pass_at_1"]) for p in points] == [("humaneval", 0.25),
                                                                  ("humaneval+", 0.125)]
    runs = _runs(root)
    (parent,) = [r for r in runs if r["tags"].get("pipeline_role") == "pipeline"]
    # the headline of the declared metrics files only: no details, no plot data
    assert parent["metrics"] == {
        "benchmark/humaneval.pass_at_1": 0.25, "benchmark/humaneval.pass_at_1_low": 0.0,
        "benchmark/humaneval.pass_at_1_high": 0.5, "benchmark/humaneval_plus.pass_at_1": 0.125,
        "evolve/r1/r1_kept": 3.0, "evolve/r1/r1_cost_usd": 0.5}
    assert min(parent["metrics"]) == "benchmark/humaneval.pass_at_1"  # first in the UI
    assert parent["tags"]["dvc.data/merged"] == "aaaabbbbccccdddd.dir"
    assert "dvc.metrics/passk_rounds.json" not in parent["tags"]  # the log stage's own
    assert "mlflow.source.git.commit" in parent["tags"] and "dvc_outs_sha256" in parent["tags"]
    assert parent["params"]["train.max_steps"] == "8"
    assert parent["params"]["tracking.register_model"] == "null"
    def md5(path: str) -> str:
        return hashlib.md5((root / path).read_bytes()).hexdigest()

    # One dataset per scored benchmark, digest = DVC's md5 of the file; sources relative to
    # the checkout: the store moves with the repository.
    assert parent["inputs"] == [
        ["humaneval", md5("data/eval/results/humaneval.jsonl"),
         '{"uri": "data/eval/results/humaneval.jsonl"}', "evaluation"],
        ["humaneval+", md5("data/eval/results/humaneval+.jsonl"),
         '{"uri": "data/eval/results/humaneval+.jsonl"}', "evaluation"],
        ["train", md5("data/merged/train.jsonl"), '{"uri": "data/merged/train.jsonl"}',
         "training"]]
    assert len(runs) == 2  # the parent and the log stage's run

    done = _log(root, tmp_path, "log")  # nothing changed: nothing added
    assert "nothing changed since MLflow run" in done.stderr and "no run added" in done.stderr
    assert _runs(root) == runs
    # committed since (another baseline revision), the same params and outputs: still nothing
    done = _log(root, tmp_path, "log", DVC_EXP_BASELINE_REV="f" * 40)
    assert "nothing changed since MLflow run" in done.stderr and _runs(root) == runs

    lock = yaml.safe_load((root / "dvc.lock").read_text())
    lock["stages"]["merge"]["outs"][0]["md5"] = "eeeeffff00001111.dir"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    _log(root, tmp_path, "log")  # a stage reran: the parent is updated, a log run added
    after = _runs(root)
    (parent,) = [r for r in after if r["tags"].get("pipeline_role") == "pipeline"]
    assert parent["tags"]["dvc.data/merged"] == "eeeeffff00001111.dir" and len(after) == 3

    done = _log(root, tmp_path, None)  # by hand: a run of its own, the parent as it was
    assert "MLflow: logging run 'log'" in done.stderr
    runs = _runs(root)
    by_hand = [r for r in runs if r["experiment"] == "wizardcoder-by-hand"]
    assert len(by_hand) == 1
    assert by_hand[0]["metrics"]["benchmark/humaneval.pass_at_1"] == 0.25
    assert [r for r in runs if r["experiment"] == "wizardcoder"] == after
