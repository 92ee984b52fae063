"""The log stage: every metrics file, dvc.lock hashes, params and datasets on the parent run,
also when no other stage ran in this execution (all restored from DVC's run-cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from wizardcoder.log.stage import lock_outputs, metrics_files, output_digest

REPO = Path(__file__).resolve().parents[1]

LOCK = """schema: '2.0'
stages:
  merge:
    outs:
    - path: data/merged
      hash: md5
      md5: aaaabbbbccccdddd.dir
  score:
    outs:
    - path: data/eval/results.jsonl
      hash: md5
      md5: 5555666677778888
"""


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "metrics" / "evolve").mkdir(parents=True)
    (root / "data" / "merged").mkdir(parents=True)
    (root / "data" / "eval").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "dvc.lock").write_text(LOCK)
    (root / "metrics" / "score.json").write_text(json.dumps(
        {"benchmark": "humaneval", "pass@1": 0.25, "tasks": 4, "kinds": {"passed": 1}}))
    (root / "metrics" / "evolve" / "r1.json").write_text('{"kept": 3, "cost_usd": 0.5}')
    (root / "metrics" / "train_curve.json").write_text('[{"step": 1, "loss": 2.0}]')
    (root / "data" / "merged" / "train.jsonl").write_text('{"instruction": "x"}\n')
    (root / "data" / "eval" / "results.jsonl").write_text("{}\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["tracking"] = {"log_model": False, "register_model": None}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_lock_hashes_and_metrics_are_read_by_file(tmp_path):
    root = _checkout(tmp_path)
    hashes = lock_outputs(root / "dvc.lock")
    assert hashes == {"data/eval/results.jsonl": "5555666677778888",
                      "data/merged": "aaaabbbbccccdddd.dir"}
    numbers = metrics_files(root / "metrics")
    assert numbers == {"evolve.r1.kept": 3.0, "evolve.r1.cost_usd": 0.5,
                       "score.pass_at_1": 0.25, "score.tasks": 4.0, "score.kinds.passed": 1.0}
    # a file inside an output directory: the md5 of its bytes, as DVC hashes a file
    import hashlib

    train = str(root / "data" / "merged" / "train.jsonl")
    digest = output_digest(train, {str(root / "data" / "merged"): "x.dir"})
    assert digest == hashlib.md5(Path(train).read_bytes()).hexdigest()
    assert output_digest(str(root / "nowhere.jsonl"), hashes) is None


def test_log_stage_fills_the_parent_run(tmp_path):
    root = _checkout(tmp_path)
    env = {"PYTHONPATH": str(REPO), "WIZARDCODER_ROOT": str(root), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "WIZARDCODER_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "wizardcoder", "log", "--rounds-plot",
                           "metrics/score.json", "metrics/passk_rounds.json"], cwd=root,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    point = json.loads((root / "metrics" / "passk_rounds.json").read_text())
    assert point == [{"rounds": 2, "training_data": "evolved", "pass_at_1": 0.25}]
    code = ("import json, mlflow\n"
            f"mlflow.set_tracking_uri('sqlite:///{root / 'mlflow.db'}')\n"
            "r = mlflow.search_runs(experiment_names=['wizardcoder'], output_format='list',\n"
            "    filter_string=\"tags.pipeline_role = 'pipeline'\")[0]\n"
            "print(json.dumps({'metrics': r.data.metrics, 'tags': r.data.tags,\n"
            "  'params': r.data.params, 'inputs': sorted([d.dataset.name, d.dataset.digest,\n"
            "  d.tags[0].value] for d in r.inputs.dataset_inputs)}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=300)
    parent = json.loads(out.stdout.strip().splitlines()[-1])
    assert parent["metrics"]["pass_at_1"] == 0.25
    assert parent["metrics"]["evolve.r1.kept"] == 3.0
    assert parent["tags"]["dvc.data/merged"] == "aaaabbbbccccdddd.dir"
    assert "mlflow.source.git.commit" in parent["tags"]
    assert parent["params"]["train.max_steps"] == "8"
    train_md5 = __import__("hashlib").md5(
        (root / "data/merged/train.jsonl").read_bytes()).hexdigest()
    assert parent["inputs"] == [["humaneval", "5555666677778888", "evaluation"],
                                ["train", train_md5, "training"]]
