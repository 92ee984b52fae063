"""Real (tiny) fine-tuning runs: a 2-layer random Llama with the embedded model's tokenizer.

The tokenizer comes out of the bundled GGUF, so nothing here needs the network. DeepSpeed
runs go to subprocesses: DeepSpeed and accelerate keep process-wide state (the process
group, the DeepSpeed plugin) that would leak into the plain-Trainer tests.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wizardcoder.config import from_dict, load_section
from wizardcoder.errors import ConfigError, ExternalError
from wizardcoder.train import TrainConfig, run_training
from wizardcoder.train.checkpoints import checkpoint_key, last_checkpoint
from wizardcoder.train.data import (
    IGNORE_INDEX,
    SupervisedCollator,
    encode_rows,
    ensure_pad_token,
)
from wizardcoder.train.launch import deepspeed_launch_command
from wizardcoder.train.output import RUN_DEPENDENT_METRICS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Checkpoints of each test go to its own cache, never the project's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(path))
    return path


def tiny_config(model_dir: Path, **overrides) -> TrainConfig:
    values = dict(base_model=str(model_dir), max_length=64, max_steps=3, learning_rate=1e-3,
                  warmup_steps=1, per_device_train_batch_size=4,
                  gradient_accumulation_steps=1, gradient_checkpointing=False,
                  logging_steps=1, save_steps=50)
    values.update(overrides)
    return TrainConfig(**values)


class RecordingRun:
    """Stands in for tracking.StageRun."""

    def __init__(self):
        self.metrics: list[tuple[int | None, dict]] = []
        self.params: dict = {}
        self.artifacts: list[str] = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))

    def log_params(self, params):
        self.params.update(params)

    def log_artifact(self, path):
        self.artifacts.append(str(path))


def outputs(tmp_path: Path) -> dict[str, Path]:
    return {"output_dir": tmp_path / "model", "metrics_path": tmp_path / "metrics.json",
            "plots_path": tmp_path / "plots.json"}


def test_tiny_training_writes_model_metrics_and_plots(tiny_model_dir, train_jsonl, tmp_path,
                                                      cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = RecordingRun()
    out = outputs(tmp_path)
    config = tiny_config(tiny_model_dir, eval_fraction=0.25, gradient_checkpointing=True,
                         peak_tflops=1.0)
    facts_path, speed_path = tmp_path / "facts.json", tmp_path / "speed.json"
    metrics = run_training(config, train_jsonl, run=run, **out, facts_path=facts_path,
                           speed_plots_path=speed_path)

    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    assert math.isfinite(metrics["eval_loss"])
    assert metrics["global_step"] == 3 and metrics["resumed_from_step"] == 0
    assert metrics["train_samples"] == 9 and metrics["eval_samples"] == 3
    assert metrics["truncated_examples"] == 0 and metrics["train_tokens"] > 0
    assert metrics["seconds_per_step"] > 0 and metrics["train_tokens_per_s"] > 0
    # steps 2-3 only (the first log closes the start-up interval); MFU against the 1 TFLOP/s
    # given, model TFLOP/s from the PaLM count of this model's shape
    assert metrics["steady_tokens_per_s"] > 0
    assert 0 < metrics["mfu"] == pytest.approx(metrics["model_tflops_per_s"], rel=0.02)
    # The metrics file holds what identical inputs reproduce; run times, speeds and the
    # resume point are the run facts, apart.
    facts = json.loads(facts_path.read_text())
    assert set(facts) == {k for k in metrics if k in RUN_DEPENDENT_METRICS}
    assert {"train_runtime_s", "mfu", "resumed_from_step"} <= set(facts)
    assert json.loads(out["metrics_path"].read_text()) == \
        {k: v for k, v in metrics.items() if k not in facts}
    plots = json.loads(out["plots_path"].read_text())
    assert [p["step"] for p in plots] == [1, 2, 3]
    assert set(plots[0]) == {"step", "loss", "learning_rate"}
    speed = json.loads(speed_path.read_text())
    assert [p["step"] for p in speed] == [1, 2, 3] and all(p["tokens_per_s"] > 0 for p in speed)

    stepped = [(s, m) for s, m in run.metrics if s is not None and "loss" in m]
    assert [s for s, _ in stepped] == [1, 2, 3]
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_s"} <= set(stepped[-1][1])
    assert stepped[-1][1]["tokens_per_s"] > 0
    assert run.params["train_data_sha256"] in (out["output_dir"] / "README.md").read_text()

    model_dir = out["output_dir"]
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "generation_config.json").is_file()
    assert not (model_dir / "training_args.bin").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2 and tok.eos_token == "<|im_end|>"
    assert not list(cache.glob("train-checkpoints/*/checkpoint-*"))  # removed on success
    assert not list(tmp_path.glob(".model.*"))  # no staging leftovers


class Interrupt(Exception):
    pass


def test_killed_run_resumes_from_last_checkpoint(tiny_model_dir, train_jsonl, tmp_path,
                                                 cache):
    from transformers import TrainerCallback

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise Interrupt("simulated kill after checkpoint-2")

    class Steps(TrainerCallback):
        def __init__(self):
            self.seen = []

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(state.global_step)

    config = tiny_config(tiny_model_dir, max_steps=4, save_steps=2)
    out = outputs(tmp_path)
    with pytest.raises(Interrupt):
        run_training(config, train_jsonl, callbacks=[KillAfterSave()], **out)
    assert not out["output_dir"].exists() and not out["metrics_path"].exists()
    checkpoints = list(cache.glob("train-checkpoints/*/checkpoint-2"))
    assert len(checkpoints) == 1
    # A run killed while saving checkpoint-3 leaves an incomplete directory: ignored.
    (checkpoints[0].parent / "checkpoint-3").mkdir()
    assert last_checkpoint(checkpoints[0].parent) == checkpoints[0]

    steps = Steps()
    metrics = run_training(config, train_jsonl, callbacks=[steps], **out)
    assert steps.seen == [3, 4]
    assert metrics["resumed_from_step"] == 2 and metrics["global_step"] == 4
    plots = json.loads(out["plots_path"].read_text())
    assert [p["step"] for p in plots] == [1, 2, 3, 4]


DS_SCRIPT = textwrap.dedent("""
    import json, sys
    from wizardcoder.train import TrainConfig, run_training
    model_dir, train, out, ds, extra = sys.argv[1:6]
    values = dict(base_model=model_dir, max_length=64, max_steps=2, learning_rate=1e-3,
                  warmup_steps=0, per_device_train_batch_size=4, gradient_checkpointing=False,
                  gradient_accumulation_steps=1, logging_steps=1, deepspeed=ds)
    config = TrainConfig(**{**values, **json.loads(extra)})
    m = run_training(config, train, out + "/model", out + "/metrics.json", out + "/plots.json")
    print("METRICS", json.dumps(m))
""")


@pytest.mark.slow
@pytest.mark.parametrize("stage, extra", [
    ("zero2", {}), ("zero3", {}),
    ("zero2", {"packing": True, "max_length": 256}),
    ("zero3", {"lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"]}),
], ids=["zero2", "zero3", "zero2-packing", "zero3-lora"])
def test_deepspeed_trains_on_cpu(tiny_model_dir, train_jsonl, tmp_path, stage, extra):
    """Two real steps under DeepSpeed without a launcher (first use compiles a comm op)."""
    pytest.importorskip("deepspeed")
    import torch
    from transformers import AutoModelForCausalLM

    ds_config = ROOT / "configs" / "deepspeed" / f"{stage}.json"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(
        [sys.executable, "-c", DS_SCRIPT, str(tiny_model_dir), str(train_jsonl),
         str(tmp_path), str(ds_config), json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    metrics = json.loads(proc.stdout.split("METRICS", 1)[1])
    assert metrics["global_step"] == 2 and math.isfinite(metrics["train_loss"])
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert model.config.num_hidden_layers == 2  # ZeRO-3 gathered full weights on save
    if extra.get("packing"):
        assert metrics["packing_examples_per_row"] > 1
    if extra.get("lora_r"):  # merged under ZeRO-3: full-size weights, q_proj changed
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        q = "model.layers.0.self_attn.q_proj.weight"
        assert model.state_dict()[q].shape == base.state_dict()[q].shape
        assert not torch.equal(model.state_dict()[q], base.state_dict()[q])
        assert torch.equal(model.state_dict()["model.embed_tokens.weight"],
                           base.state_dict()["model.embed_tokens.weight"])
        assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").is_file()


LAUNCH_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from wizardcoder.train import TrainConfig, maybe_relaunch
    model_dir, train, out, ds = sys.argv[1:5]
    config = TrainConfig(base_model=model_dir, max_length=64, max_steps=1, warmup_steps=0,
                         per_device_train_batch_size=4, gradient_checkpointing=False,
                         logging_steps=1, deepspeed=ds, launcher="deepspeed", num_gpus=1)
    maybe_relaunch(config)  # execs `deepspeed ... this_script args`; returns in the worker
    from wizardcoder.train import run_training
    m = run_training(config, train, out + "/model", out + "/metrics.json", out + "/plots.json")
    print("WORKER", os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"], json.dumps(m))
""")


@pytest.mark.slow
def test_launcher_deepspeed_relaunches_the_stage(tiny_model_dir, train_jsonl, tmp_path):
    """``launcher: deepspeed`` re-executes the script under the real launcher (1 CPU rank)."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "stage.py"
    script.write_text(LAUNCH_SCRIPT, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(train_jsonl), str(tmp_path),
         str(ROOT / "configs" / "deepspeed" / "zero2.json")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "WORKER 0 1 " in proc.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["global_step"] == 1


# The real default base model (dequantized from the bundled GGUF) training one step is checked
# by tests/test_pipeline_e2e.py::test_cold_repro_writes_real_metrics, whose train stage does
# exactly that: a second run here cost a minute of the slow suite.


@pytest.mark.parametrize("packing", [False, True])
def test_tokens_seen_counts_real_tokens_with_and_without_packing(tiny_model_dir, train_jsonl,
                                                                 tmp_path, packing):
    """One epoch sees every real token exactly once: no padding, every EOS (pad == EOS)."""
    config = tiny_config(tiny_model_dir, max_steps=-1, num_train_epochs=1, max_length=256,
                         per_device_train_batch_size=2, packing=packing, eval_fraction=0.25)
    metrics = run_training(config, train_jsonl, **outputs(tmp_path))
    assert metrics["tokens_seen"] == metrics["train_tokens"] > 0
    assert metrics["train_samples"] == 9 and metrics["eval_samples"] == 3
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["eval_loss"])
    if packing:
        # ~50-token examples in 256-token rows: 9 examples fit in 2 or 3 rows
        rows = metrics["packed_rows"]
        assert rows in (2, 3) and metrics["packing_examples_per_row"] == round(9 / rows, 3)
        assert metrics["packing_density"] == round(metrics["train_tokens"] / (rows * 256), 4)
        assert metrics["global_step"] == math.ceil(rows / 2)
    else:
        assert "packed_rows" not in metrics and metrics["global_step"] == 5


def test_lora_trains_only_adapters_and_saves_a_merged_model(tiny_model_dir, train_jsonl,
                                                            tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, TrainerCallback

    class Grads(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.trainable = [n for n, p in model.named_parameters() if p.requires_grad]
            self.frozen = [n for n, p in model.named_parameters() if not p.requires_grad]

    grads = Grads()
    config = tiny_config(tiny_model_dir, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         lora_target_modules=["q_proj", "v_proj"], learning_rate=1e-2,
                         gradient_checkpointing=True)
    out = outputs(tmp_path)
    metrics = run_training(config, train_jsonl, callbacks=[grads], **out)

    assert grads.trainable and all("lora_" in n for n in grads.trainable)
    assert any("q_proj.base_layer" in n for n in grads.frozen)
    # 2 layers x (q: 64x4 + 4x64, v: 64x4 + 4x32) = 2 x (512 + 384)
    assert metrics["trainable_parameters"] == 2 * (512 + 384)
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 100

    model_dir = out["output_dir"]
    assert not (model_dir / "adapter_config.json").exists()  # loads as a plain model
    assert (model_dir / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    m, b = merged.state_dict(), base.state_dict()
    assert set(m) == set(b)
    changed = {k for k in b if not torch.equal(m[k], b[k])}
    assert changed == {f"model.layers.{i}.self_attn.{p}.weight"
                       for i in range(2) for p in ("q_proj", "v_proj")}
    assert merged.config.use_cache is True

    # The merged weights compute what base + adapter compute.
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with_adapter = PeftModel.from_pretrained(base, model_dir / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(ids).logits, with_adapter(ids).logits,
                                   atol=1e-5, rtol=1e-4)


def test_lora_unknown_target_module_is_a_config_error(tiny_model_dir, train_jsonl, tmp_path):
    config = tiny_config(tiny_model_dir, lora_r=4, lora_target_modules=["c_attn"])
    with pytest.raises(ConfigError, match=r"train\.lora_target_modules"):
        run_training(config, train_jsonl, **outputs(tmp_path))


# --- data encoding -----------------------------------------------------------------------

def test_truncation_is_counted_and_prompt_only_rows_dropped(tokenizer):
    long_output = "\n".join(f"    x{i} = {i}" for i in range(60))
    rows = [(1, {"instruction": "Short task.", "output": "pass"}),
            (2, {"instruction": "Long answer.", "output": long_output}),
            (3, {"instruction": "word " * 200, "output": "pass"})]
    ds = encode_rows(tokenizer, rows, max_length=64, path="rows.jsonl")
    assert ds.stats.truncated_examples == 2 and ds.stats.dropped_examples == 1
    assert len(ds) == 2 and all(len(e["input_ids"]) <= 64 for e in ds.examples)
    assert ds[1]["input_ids"][-1] != tokenizer.eos_token_id  # truncation cut the EOS


def test_missing_output_is_a_data_error_with_line(tokenizer):
    from wizardcoder.errors import DataError

    with pytest.raises(DataError, match=r"rows.jsonl:7: field 'output'"):
        encode_rows(tokenizer, [(7, {"instruction": "x", "output": ""})], 64, "rows.jsonl")


def test_pad_token_falls_back_to_eos_and_collator_masks_padding(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    assert tok.pad_token is None
    assert ensure_pad_token(tok) == "eos" and tok.pad_token_id == tok.eos_token_id
    batch = SupervisedCollator(tok.pad_token_id)([
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tok.pad_token_id, tok.pad_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]


# --- config, loading, launcher -----------------------------------------------------------

@pytest.mark.parametrize("overrides, field", [
    ({"learning_rate": 0.0}, "train.learning_rate"),
    ({"max_length": 4}, "train.max_length"),
    ({"max_steps": 0}, "train.max_steps"),
    ({"eval_fraction": 1.0}, "train.eval_fraction"),
    ({"launcher": "deepspeed"}, "train.launcher"),
    ({"deepspeed": "zero2.yaml"}, "train.deepspeed"),
    ({"precision": "fp8"}, "train.precision"),
    ({"lr_scheduler_type": "cosin"}, "train.lr_scheduler_type"),
    ({"warmup_ratio": 0.1}, "warmup_ratio"),
    ({"lora_r": -1}, "train.lora_r"),
    ({"lora_dropout": 1.0}, "train.lora_dropout"),
    ({"lora_target_modules": []}, "train.lora_target_modules"),
    ({"lora_target_modules": "q_proj"}, "train.lora_target_modules"),
    ({"packing": "yes"}, "train.packing"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(TrainConfig, overrides, "train")


def test_params_file_error_names_file_and_field(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  per_device_train_batch_size: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"params.yaml: train\.per_device_train_batch_size"):
        load_section(params, "train", TrainConfig)
    params.write_text("train:\n  learning_rate: 2e-5\n  max_steps: 5\n", encoding="utf-8")
    config = load_section(params, "train", TrainConfig)
    assert config.learning_rate == 2e-5 and config.num_train_epochs == 3.0


def test_defaults_are_the_paper_recipe():
    c = TrainConfig()
    assert (c.base_model, c.learning_rate, c.lr_scheduler_type, c.warmup_steps) == \
        ("embedded", 2e-5, "cosine", 30)
    assert (c.num_train_epochs, c.max_length, c.max_steps) == (3.0, 2048, -1)


def test_unloadable_base_model_is_one_clear_error(tmp_path, train_jsonl, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tiny_config(tmp_path / "no-such-model")
    with pytest.raises(ExternalError, match=r"cannot load base model .*offline\?"):
        run_training(config, train_jsonl, **outputs(tmp_path))


def test_fp16_on_cpu_is_a_config_error(tiny_model_dir, train_jsonl, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    with pytest.raises(ConfigError, match=r"train\.precision"):
        run_training(tiny_config(tiny_model_dir, precision="fp16"), train_jsonl,
                     **outputs(tmp_path))


def test_checkpoint_key_ignores_cadence_but_not_recipe():
    base = TrainConfig()
    same = TrainConfig(logging_steps=7, save_steps=3)
    other = TrainConfig(learning_rate=1e-4)
    assert checkpoint_key(base, "abc") == checkpoint_key(same, "abc")
    assert checkpoint_key(base, "abc") != checkpoint_key(other, "abc")
    assert checkpoint_key(base, "abc") != checkpoint_key(base, "abd")


def test_deepspeed_launch_command():
    config = TrainConfig(deepspeed="configs/deepspeed/zero3.json", launcher="deepspeed",
                         num_gpus=8, master_port=29600)
    cmd = deepspeed_launch_command(config, ["stages/train.py", "--params", "params.yaml"])
    assert cmd == ["deepspeed", "--no_local_rank", "--num_nodes", "1", "--num_gpus", "8",
                   "--master_port", "29600", "stages/train.py", "--params", "params.yaml"]
    cmd = deepspeed_launch_command(config, ["train"], module="wizardcoder.cli")
    assert cmd[-3:] == ["--module", "wizardcoder.cli", "train"]
