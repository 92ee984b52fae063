"""Recipe options of the train stage: attention, save dtype, eval curve, pass-throughs, the
model card header, and the packing self-check on a model whose attention leaks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_training import outputs, tiny_config
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError
from wizardcoder.train import TrainConfig, run_training
from wizardcoder.train.packing import check_packing


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(path))
    return path


def safetensors_dtypes(model_dir: Path) -> set[str]:
    """The dtypes written in the safetensors header (read raw, no loader in between)."""
    raw = (model_dir / "model.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("precision, save_dtype, expected, config_dtype", [
    ("fp32", "auto", "F32", "float32"),
    ("bf16", "auto", "BF16", "bfloat16"),
    ("fp32", "float16", "F16", "float16"),
], ids=["fp32-auto", "bf16-auto", "fp32-as-fp16"])
def test_saved_weights_are_in_the_save_dtype(tiny_model_dir, train_jsonl, tmp_path,
                                             precision, save_dtype, expected, config_dtype):
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(tiny_model_dir, max_steps=1, precision=precision,
                         save_dtype=save_dtype)
    out = outputs(tmp_path)
    run_training(config, train_jsonl, **out)
    assert safetensors_dtypes(out["output_dir"]) == {expected}
    saved = json.loads((out["output_dir"] / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == config_dtype
    model = AutoModelForCausalLM.from_pretrained(out["output_dir"])
    ids = torch.tensor([[1, 5, 9, 42]])
    assert torch.isfinite(model(ids).logits.float()).all()


def test_eval_steps_write_an_eval_curve(tiny_model_dir, train_jsonl, tmp_path):
    out = outputs(tmp_path)
    eval_curve = tmp_path / "curve_eval.json"
    config = tiny_config(tiny_model_dir, max_steps=4, eval_fraction=0.25, eval_steps=2)
    metrics = run_training(config, train_jsonl, eval_plots_path=eval_curve, **out)
    curve = json.loads(eval_curve.read_text())
    assert [p["step"] for p in curve] == [2, 4]
    assert all(math.isfinite(p["eval_loss"]) for p in curve)
    assert metrics["eval_loss"] == curve[-1]["eval_loss"]  # the last eval is the final one


def test_without_eval_split_the_eval_curve_is_empty(tiny_model_dir, train_jsonl, tmp_path):
    eval_curve = tmp_path / "curve_eval.json"
    run_training(tiny_config(tiny_model_dir, max_steps=1), train_jsonl,
                 eval_plots_path=eval_curve, **outputs(tmp_path))
    assert json.loads(eval_curve.read_text()) == []


def test_model_card_has_a_hub_header_and_no_run_dependent_facts(
        tiny_model_dir, train_jsonl, tmp_path):
    import yaml

    config = tiny_config(tiny_model_dir, max_steps=2, card_license="apache-2.0",
                         card_datasets=["sahil2801/CodeAlpaca-20k"], peak_tflops=1.0)
    out = outputs(tmp_path)
    metrics = run_training(config, train_jsonl, **out)
    card = (out["output_dir"] / "README.md").read_text()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["license"] == "apache-2.0"
    assert header["datasets"] == ["sahil2801/CodeAlpaca-20k"]
    assert header["library_name"] == "transformers"
    assert "base_model" not in header  # a local directory is no Hub reference
    assert {"wizardcoder", "sft"} <= set(header["tags"])
    assert set(header["library_versions"]) >= {"transformers", "torch"}
    # run times, speeds, MFU, resume points: the run facts only; the logged loss (averaged
    # over train.logging_steps): metrics/train.json only
    for key in ("train_runtime_s", "seconds_per_step", "train_tokens_per_s",
                "steady_tokens_per_s", "mfu", "model_tflops_per_s", "resumed_from_step",
                "train_loss", "train_loss_mean"):
        assert key in metrics or key in ("steady_tokens_per_s", "mfu", "model_tflops_per_s")
        assert f'"{key}"' not in card
    assert f'"global_step": {metrics["global_step"]}' in card
    assert f'"train_tokens": {metrics["train_tokens"]}' in card
    # only the train keys that can change the weights
    assert '"max_steps": 2' in card and '"learning_rate"' in card
    for key in ("logging_steps", "save_steps", "keep_checkpoints", "checkpoint_dir",
                "peak_tflops"):
        assert f'"{key}"' not in card


def test_the_model_card_does_not_change_with_settings_that_change_no_weight(
        tiny_model_dir, train_jsonl, tmp_path):
    """logging_steps 1 -> 2, another checkpoint cadence: the same weights, the same card, so
    the same model hash for generation's resume key."""
    cards = []
    for i, extra in enumerate(({"logging_steps": 1}, {"logging_steps": 2, "save_steps": 1})):
        out = outputs(tmp_path / str(i))
        run_training(tiny_config(tiny_model_dir, max_steps=2, **extra), train_jsonl, **out)
        cards.append((out["output_dir"] / "README.md").read_bytes())
    assert cards[0] == cards[1]


def test_embedded_model_card_names_the_hub_base_model():
    from wizardcoder.train.output import card_header

    header = "\n".join(card_header(TrainConfig(), "float32"))
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in header
    assert 'license: "apache-2.0"' in header


def test_flash_attention_without_package_or_gpu_is_a_clear_error(
        tiny_model_dir, train_jsonl, tmp_path):
    import importlib.util

    import torch

    if importlib.util.find_spec("flash_attn") and torch.cuda.is_available():
        pytest.skip("flash-attn and a GPU are here")
    config = tiny_config(tiny_model_dir, attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError, match=r"train\.attn_implementation: flash_attention_2 needs"):
        run_training(config, train_jsonl, **outputs(tmp_path))
    assert not (tmp_path / "model").exists()


def test_liger_without_its_package_is_a_clear_error(tiny_model_dir, train_jsonl, tmp_path):
    import importlib.util

    if importlib.util.find_spec("liger_kernel"):
        pytest.skip("liger-kernel is installed")
    config = tiny_config(tiny_model_dir, use_liger_kernel=True)
    with pytest.raises(ConfigError, match=r"train\.use_liger_kernel: needs the liger-kernel"):
        run_training(config, train_jsonl, **outputs(tmp_path))


def test_eager_attention_trains_packed(tiny_model_dir, train_jsonl, tmp_path):
    config = tiny_config(tiny_model_dir, max_steps=1, attn_implementation="eager", packing=True,
                         max_length=256)
    metrics = run_training(config, train_jsonl, **outputs(tmp_path))
    assert math.isfinite(metrics["train_loss"])


def test_flex_attention_on_cpu_is_a_clear_error(tiny_model_dir, train_jsonl, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    config = tiny_config(tiny_model_dir, attn_implementation="flex_attention")
    with pytest.raises(ConfigError, match=r"train\.attn_implementation: flex_attention trains"):
        run_training(config, train_jsonl, **outputs(tmp_path))


def test_neftune_passes_through_and_changes_the_loss(tiny_model_dir, train_jsonl, tmp_path):
    plain = run_training(tiny_config(tiny_model_dir, max_steps=2), train_jsonl,
                         **outputs(tmp_path / "a"))
    noisy = run_training(tiny_config(tiny_model_dir, max_steps=2, neftune_noise_alpha=50.0),
                         train_jsonl, **outputs(tmp_path / "b"))
    assert noisy["train_loss"] != plain["train_loss"]


@pytest.mark.parametrize("overrides, field", [
    ({"attn_implementation": "flash"}, "train.attn_implementation"),
    ({"save_dtype": "fp8"}, "train.save_dtype"),
    ({"eval_steps": 5}, "train.eval_steps"),  # no eval split to evaluate on
    ({"eval_steps": -1, "eval_fraction": 0.1}, "train.eval_steps"),
    ({"neftune_noise_alpha": 0}, "train.neftune_noise_alpha"),
    ({"use_liger_kernel": "yes"}, "train.use_liger_kernel"),
    ({"packing_check_tolerance": 0}, "train.packing_check_tolerance"),
    ({"checkpoint_dir": " "}, "train.checkpoint_dir"),
    ({"card_datasets": [""]}, "train.card_datasets"),
])
def test_new_options_are_validated(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        from_dict(TrainConfig, overrides, "train")


# --- the packing self-check --------------------------------------------------------------

def leaky_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                    **kwargs):
    """Causal attention over the whole row, ignoring the packed-sequence mask: what an
    attention kernel (or a transformers version) that does not see packing computes."""
    import torch

    n_rep = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(n_rep, dim=1)
    value = value.repeat_interleave(n_rep, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True,
                                                           scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def tiny_llama(attn: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, use_cache=False,
                         attn_implementation=attn)
    return LlamaForCausalLM(config).train()


EXAMPLES = [{"input_ids": [(7 * i + 3) % 96 + 1 for i in range(20)]},
            {"input_ids": [(5 * i + 11) % 96 + 1 for i in range(15)]}]


def test_packing_check_passes_on_sdpa_and_refuses_a_leaking_attention():
    from transformers import AttentionInterface

    model = tiny_llama("sdpa")
    assert check_packing(model, EXAMPLES, "fp32") < 1e-5
    assert model.training  # the check leaves the mode as it found it

    AttentionInterface.register("wizardcoder_leaky_test", leaky_attention)
    leaky = tiny_llama("wizardcoder_leaky_test")
    with pytest.raises(ConfigError, match=r"train\.packing: packed examples are not isolated"):
        check_packing(leaky, EXAMPLES, "fp32")
    # the same model, unpacked, computes exactly what sdpa computes: only packing leaks
    import torch

    ids = torch.tensor([EXAMPLES[0]["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(leaky(ids).logits, model(ids).logits)
