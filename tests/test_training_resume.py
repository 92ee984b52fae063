"""A killed and resumed run is the same run as an uninterrupted one.

Each case runs the real stage process (``python -m stages.train``) three times on the tiny
random Llama: once uninterrupted, once SIGKILLed as soon as a complete checkpoint is on
disk, and once more to resume it. The resumed run must reproduce the uninterrupted one:
the per-step loss curve (so the same batches in the same order) and the final weights,
within ``LOSS_TOL`` / ``WEIGHT_TOL``. NEFTune noise is on in the plain case, so the run
draws random numbers every step: only a restored RNG state gives the same losses.

Tolerances: fp32 on a CPU is deterministic here, so the runs agree to rounding of the
same operations in the same order; 1e-5 relative leaves room for nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.kill_resume import finish, kill_when
from wizardcoder.train.checkpoints import is_complete

ROOT = Path(__file__).resolve().parents[1]
STEPS = 16  # 4 checkpoints; a kill after the first leaves 12 steps of margin
LOSS_TOL = 1e-5  # relative, per logged step
WEIGHT_TOL = 1e-5  # relative (atol 1e-6), every tensor


@pytest.fixture()
def train_rows(tmp_path) -> Path:
    rows = [{"instruction": f"Write a function that returns {i} times x plus {i % 5}.",
             "input": "x is an int" if i % 4 == 0 else "",
             "output": f"def f_{i}(x):\n    return {i} * x + {i % 5}"} for i in range(32)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def stage(tmp: Path, model_dir: Path, data: Path, train: dict, name: str,
          cache: Path) -> tuple[subprocess.Popen, dict[str, Path]]:
    params = tmp / f"{name}.params.yaml"
    values = {"base_model": str(model_dir), "max_length": 64, "max_steps": STEPS,
              "learning_rate": 1e-3, "warmup_steps": 2, "per_device_train_batch_size": 2,
              "gradient_accumulation_steps": 2, "gradient_checkpointing": False,
              "logging_steps": 1, "save_steps": 4, "save_total_limit": 2, "seed": 7,
              "lr_scheduler_type": "cosine", **train}
    params.write_text(yaml.safe_dump({"train": values}), encoding="utf-8")
    out = {"model": tmp / name / "model", "metrics": tmp / name / "metrics.json",
           "plots": tmp / name / "curve.json", "facts": tmp / name / "facts.json"}
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(WIZARDCODER_CACHE_DIR=str(cache), WIZARDCODER_MLFLOW="0",
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "--params", str(params), "--data", str(data),
         "--out", str(out["model"]), "--metrics", str(out["metrics"]),
         "--plots", str(out["plots"]), "--run-facts", str(out["facts"])],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def kill_after_first_checkpoint(proc: subprocess.Popen, cache: Path) -> int:
    """SIGKILL the stage once a checkpoint is complete; returns that checkpoint's step."""
    done: list[Path] = []

    def checkpointed() -> bool:
        done[:] = [p for p in cache.glob("train-checkpoints/*/checkpoint-*")
                   if is_complete(p, 1)]
        return bool(done)

    kill_when(proc, checkpointed, timeout=900,
              what="the stage wrote no complete checkpoint")
    return min(int(p.name.split("-")[1]) for p in done)


def weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def assert_same_run(clean: dict[str, Path], resumed: dict[str, Path]) -> None:
    import torch

    a = json.loads(clean["plots"].read_text())
    b = json.loads(resumed["plots"].read_text())
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=LOSS_TOL), (x, y)
        assert y["learning_rate"] == pytest.approx(x["learning_rate"], rel=1e-9)
    wa, wb = weights(clean["model"]), weights(resumed["model"])
    assert set(wa) == set(wb)
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=WEIGHT_TOL, atol=1e-6, msg=name)
    ma = json.loads(clean["metrics"].read_text())
    mb = json.loads(resumed["metrics"].read_text())
    assert mb["tokens_seen"] == ma["tokens_seen"] and mb["global_step"] == STEPS
    assert mb["train_loss_mean"] == pytest.approx(ma["train_loss_mean"], rel=LOSS_TOL)
    # the model card depends on the inputs only: byte-identical after a kill and resume
    assert (resumed["model"] / "README.md").read_bytes() == \
        (clean["model"] / "README.md").read_bytes()


def kill_and_resume(tmp_path: Path, model_dir: Path, data: Path, train: dict) -> None:
    clean_proc, clean = stage(tmp_path, model_dir, data, train, "clean", tmp_path / "c1")
    finish(clean_proc, timeout=900)
    cache = tmp_path / "c2"
    proc, _ = stage(tmp_path, model_dir, data, train, "killed", cache)
    killed_at = kill_after_first_checkpoint(proc, cache)
    assert killed_at < STEPS
    proc, resumed = stage(tmp_path, model_dir, data, train, "resumed", cache)
    finish(proc, timeout=900)
    facts = json.loads(resumed["facts"].read_text())  # the resume point is a run fact
    assert facts["resumed_from_step"] >= killed_at > 0
    assert_same_run(clean, resumed)


@pytest.mark.slow  # three stage processes: ~2-6 minutes on 2 loaded cores
def test_killed_plain_run_resumes_into_the_same_run(tiny_model_dir, train_rows, tmp_path):
    kill_and_resume(tmp_path, tiny_model_dir, train_rows, {"neftune_noise_alpha": 5.0})


@pytest.mark.slow
@pytest.mark.parametrize("stage_name", ["zero2", "zero3"])
def test_killed_zero_run_resumes_into_the_same_run(tiny_model_dir, train_rows, tmp_path,
                                                   stage_name):
    pytest.importorskip("deepspeed")
    kill_and_resume(tmp_path, tiny_model_dir, train_rows,
                    {"deepspeed": str(ROOT / "configs" / "deepspeed" / f"{stage_name}.json")})
