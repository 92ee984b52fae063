"""FLOPs per token, MFU and the peak table (wizardcoder/train/flops.py)."""

from types import SimpleNamespace

import pytest

from wizardcoder.errors import ConfigError
from wizardcoder.train.config import TrainConfig
from wizardcoder.train.flops import (
    flops_per_token,
    matmul_parameters,
    peak_tflops,
    utilization,
)

# SmolLM2-135M's shape (tied embeddings) and a Llama-7B-like untied one
SMOL = SimpleNamespace(vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                       tie_word_embeddings=True)
UNTIED = SimpleNamespace(vocab_size=32000, hidden_size=4096, num_hidden_layers=32,
                         tie_word_embeddings=False)


def test_tied_embedding_counts_once_as_the_output_head():
    assert matmul_parameters(SMOL, 134_515_008) == 134_515_008


def test_untied_input_embedding_is_not_a_matrix_product():
    assert matmul_parameters(UNTIED, 6_738_415_616) == 6_738_415_616 - 32000 * 4096


def test_palm_count_by_hand():
    # 6 N + 12 L d s
    assert flops_per_token(SMOL, 134_515_008, 150) == 6 * 134_515_008 + 12 * 30 * 576 * 150
    # the attention term grows with the sequence, the weight term does not
    assert flops_per_token(SMOL, 1000, 2048) - flops_per_token(SMOL, 1000, 1024) \
        == 12 * 30 * 576 * 1024


def test_utilization_per_device_and_mfu():
    per_token = flops_per_token(SMOL, 134_515_008, 150)
    one = utilization(100_000, SMOL, 134_515_008, 150, peak=989.4)
    assert one["model_tflops_per_s"] == pytest.approx(100_000 * per_token / 1e12, abs=1e-4)
    assert one["mfu"] == pytest.approx(one["model_tflops_per_s"] / 989.4, abs=1e-5)
    # the same total rate over 4 devices is a quarter of the work per device
    four = utilization(100_000, SMOL, 134_515_008, 150, peak=989.4, devices=4)
    assert four["model_tflops_per_s"] == pytest.approx(one["model_tflops_per_s"] / 4, abs=1e-4)
    assert "mfu" not in utilization(100_000, SMOL, 134_515_008, 150, peak=None)


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.4),
    ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA H200", 989.4),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L4", 121.0),
    ("Some Future Accelerator", None),
])
def test_peak_by_device_name(name, peak):
    assert peak_tflops(name) == peak


@pytest.mark.parametrize("bad", [0, -5.0])
def test_peak_tflops_param_must_be_positive(bad):
    with pytest.raises(ConfigError, match="peak_tflops"):
        TrainConfig(peak_tflops=bad)


def test_length_weighted_attention_length_by_hand():
    from wizardcoder.train.flops import attention_length

    # two examples of 100 and 300 tokens: attention costs 12Ld(100^2 + 300^2) for 400
    # tokens, i.e. s = 100000 / 400 = 250 per token, not the plain mean 200
    assert attention_length([100, 300]) == 250.0
    assert attention_length([128, 128, 128]) == 128.0  # equal lengths: the mean
    assert attention_length([]) == 0.0
    total = sum(flops_per_token(SMOL, 1000, attention_length([100, 300])) * n
                for n in [100, 300])
    by_example = sum(6 * 1000 * n + 12 * 30 * 576 * n * n for n in [100, 300])
    assert total == pytest.approx(by_example)


def test_frozen_weights_cost_4_not_6_flops_per_token():
    # LoRA on SmolLM2: 134.5M frozen + 1.2M adapter weights (all trainable)
    total, adapters = 134_515_008 + 1_228_800, 1_228_800
    lora = flops_per_token(SMOL, total, 150, trainable_parameters=adapters)
    assert lora == 6 * adapters + 4 * (total - adapters) + 12 * 30 * 576 * 150
    full = flops_per_token(SMOL, total, 150)
    assert full == flops_per_token(SMOL, total, 150, trainable_parameters=total)
    assert full - lora == 2 * (total - adapters)  # the weight gradients not computed
    # an untied input embedding is no matrix product whether frozen or not
    assert flops_per_token(UNTIED, 6_738_415_616, 0, trainable_parameters=0) == \
        4 * (6_738_415_616 - 32000 * 4096)


def test_utilization_passes_the_trainable_count():
    full = utilization(1000, SMOL, 1_000_000, 100, peak=1.0)
    lora = utilization(1000, SMOL, 1_000_000, 100, peak=1.0, trainable_parameters=10_000)
    assert lora["model_tflops_per_s"] < full["model_tflops_per_s"]
    expected = 1000 * (6 * 10_000 + 4 * 990_000 + 12 * 30 * 576 * 100) / 1e12
    assert lora["model_tflops_per_s"] == pytest.approx(expected, abs=1e-4)
