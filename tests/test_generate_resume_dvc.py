"""`dvc repro` of the generate stage resumes after a SIGKILL.

DVC deletes a stage's outputs before it runs it, so a samples file cannot carry progress across
a killed `dvc repro`; the runner keeps it in the cache dir, keyed by the model's content and the
decoding settings. The model here is served by the tests' own OpenAI-compatible server (a real
HTTP server), slowed down so the stage can be killed between two tasks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fake_openai import FaultServer, Reply
from tests.kill_resume import kill_when

REPO = Path(__file__).resolve().parents[1]
TASKS = 6
pytestmark = pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc is not installed")


def code_reply(body: dict) -> Reply:
    return Reply(f"```python\ndef x():\n    return {body.get('seed')}\n```")


def _settings(url: str) -> dict:
    return {"benchmarks": ["humaneval"], "limit": TASKS, "batch_size": 1, "backend": "openai",
            "openai_api": "chat", "base_url": url, "model": "fault-model",
            "prompt_format": "completion", "max_new_tokens": 8}


def _make_repo(root: Path, url: str) -> dict:
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["generate"]
    (root / "models" / "sft").mkdir(parents=True)
    (root / "models" / "sft" / "weights.bin").write_bytes(b"weights v1")
    (root / "params.yaml").write_text(yaml.safe_dump({"generate": _settings(url)}))
    dvc = {"stages": {"generate": {"cmd": stage["cmd"], "deps": ["models/sft"],
                                   "params": ["generate"], "outs": stage["outs"]}}}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc))
    env = {**os.environ, "PYTHONPATH": str(REPO), "WIZARDCODER_MLFLOW": "0"}
    for key in ("DVC_ROOT", "WIZARDCODER_ROOT", "WIZARDCODER_CACHE_DIR"):
        env.pop(key, None)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    return env


def _work_rows(root: Path) -> list[dict]:
    rows = []
    for path in (root / ".cache" / "wizardcoder" / "generate").glob("*.jsonl"):
        for line in path.read_text().split("\n")[:-1]:
            row = json.loads(line)
            if row.get("type") == "sample":
                rows.append(row)
    return rows


def test_dvc_repro_of_generate_resumes_after_sigkill(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    with FaultServer(responder=code_reply, latency=0.4) as server:
        env = _make_repo(root, server.url)
        proc = subprocess.Popen(["dvc", "repro", "generate"], cwd=root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        kill_when(proc, lambda: len(_work_rows(root)) >= 2, timeout=120,
                  what="no progress", group=True, interval=0.05)
        before = {r["task_id"]: r for r in _work_rows(root)}
        assert 2 <= len(before) < TASKS
        assert not (root / "data" / "eval" / "samples").exists()  # written at the end
        calls_before = server.total

        done = subprocess.run(["dvc", "repro", "generate"], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        # Only the missing tasks were asked for again (plus at most the one in flight at the
        # kill): nothing finished before the kill was asked twice.
        assert server.total - calls_before >= TASKS - len(before)
        assert server.total <= TASKS + 1
        from wizardcoder.generate import load_benchmark

        problems = load_benchmark("humaneval", TASKS)
        for task_id in before:
            assert server.counts[problems[task_id]["prompt"]] == 1, task_id

        # Byte-identical to an undisturbed run of the same settings and model content.
        monkeypatch.chdir(root)
        monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "fresh-cache"))
        from wizardcoder.generate import GenerateConfig, generate_samples

        generate_samples(GenerateConfig(**_settings(server.url)), "models/sft",
                         tmp_path / "undisturbed.jsonl", progress=False)
    resumed = (root / "data" / "eval" / "samples" / "humaneval.jsonl").read_bytes()
    assert resumed == (tmp_path / "undisturbed.jsonl").read_bytes()
    kept = [json.loads(line) for line in resumed.decode().splitlines()[1:]]
    assert [r["task_id"] for r in kept] == [f"HumanEval/{i}" for i in range(TASKS)]
    for task_id, row in before.items():  # what was finished before the kill is what shipped
        assert next(r for r in kept if r["task_id"] == task_id)["raw"] == row["raw"]

    status = subprocess.run(["dvc", "status"], cwd=root, env=env, capture_output=True,
                            text=True, check=True).stdout
    assert "up to date" in status


def test_model_digest_is_content_not_path(tmp_path):
    from wizardcoder.generate.runner import model_sha256

    for name in ("a", "b"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "config.json").write_text("{}")
        (tmp_path / name / "sub" / "w.bin").write_bytes(b"weights")
    assert model_sha256(tmp_path / "a") == model_sha256(tmp_path / "b")
    (tmp_path / "b" / "sub" / "w.bin").write_bytes(b"weightz")
    assert model_sha256(tmp_path / "a") != model_sha256(tmp_path / "b")
    (tmp_path / "b" / "sub" / "w.bin").rename(tmp_path / "b" / "w.bin")  # same bytes, moved
    assert model_sha256(tmp_path / "a") != model_sha256(tmp_path / "b")
    assert model_sha256("served-model") != model_sha256("other-model")
