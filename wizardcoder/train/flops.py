"""Model FLOPs per token and MFU (model FLOPs utilization) of a training run.

The count is the one of the PaLM paper (Chowdhery et al. 2022, appendix B), which nanoGPT
and torchtitan also report: a forward and backward pass cost ``6 * N`` FLOPs per token for
the ``N`` weights that take part in a matrix product, plus ``12 * L * d * s`` for the
attention scores and their weighted sum (``L`` layers, width ``d``, sequence length ``s``).
Embedding lookups are not matrix products, so a tied input embedding is counted once (as the
output head) and an untied one is left out. Gradient checkpointing recomputes the forward
pass but is not counted: MFU measures useful work, not work done.

**Frozen weights (LoRA).** A weight matrix costs 2 FLOPs per token in the forward pass
(a multiply and an add), 2 in the backward pass for the gradient of its INPUT (needed to
keep back-propagating to the adapters below it) and 2 for the gradient of the WEIGHT
itself. A frozen weight skips the last: 4 FLOPs per token instead of 6 (the 2N of the
forward plus the 2N of the backward through the activations). The adapters are trainable:
6 each. (Below the lowest adapter no input gradient is needed either; with the default
``all-linear`` targets that is nothing but the embedding lookup, so it is not modelled.)
The attention term has no weights and its backward is all activation gradients: unchanged.

**Lengths.** Attention costs ``12 L d s`` per token of a sequence of length ``s``, so a
batch of examples with lengths ``s_i`` costs ``12 L d sum(s_i^2)`` for ``sum(s_i)`` tokens:
per token that is the length-weighted mean ``sum(s_i^2) / sum(s_i)``
(``attention_length``), not the plain mean, which undercounts mixed lengths. Packed rows
are block-diagonal, so the examples' own lengths are the right ``s_i`` with packing too.

MFU is achieved model FLOP/s over the device's peak dense bf16/fp16 FLOP/s. The peak comes
from ``PEAK_TFLOPS`` by device name, or from ``train.peak_tflops`` for other hardware.
"""

from __future__ import annotations

from typing import Any

# Dense (no sparsity) bf16/fp16 tensor-core peaks from the vendors' data sheets, TFLOP/s.
# Longest names first: "H100 PCIe" must not match the SXM entry.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM5 (HBM3)
    ("H200", 989.4),
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.2),
    ("V100", 125.0),
)


def peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a CUDA device by its name, or None when unknown."""
    upper = device_name.upper()
    for key, value in PEAK_TFLOPS:
        if key in upper:
            return value
    return None


def matmul_parameters(model_config: Any, total_parameters: int) -> int:
    """Weights that take part in matrix products: all but an untied input embedding."""
    vocab = getattr(model_config, "vocab_size", 0) or 0
    width = getattr(model_config, "hidden_size", 0) or 0
    tied = bool(getattr(model_config, "tie_word_embeddings", False))
    return total_parameters if tied else max(total_parameters - vocab * width, 0)


def attention_length(lengths: list[int]) -> float:
    """Length-weighted mean ``sum(s^2) / sum(s)``: the ``s`` of the per-token attention term."""
    tokens = sum(lengths)
    return sum(n * n for n in lengths) / tokens if tokens else 0.0


def flops_per_token(model_config: Any, total_parameters: int, seq_len: float,
                    trainable_parameters: int | None = None) -> float:
    """Training FLOPs (forward + backward) per token at (attention) length ``seq_len``.

    ``trainable_parameters`` below the total (LoRA) counts the frozen rest at 4, not 6.
    """
    layers = getattr(model_config, "num_hidden_layers", 0) or 0
    width = getattr(model_config, "hidden_size", 0) or 0
    matmul = matmul_parameters(model_config, total_parameters)
    trained = matmul if trainable_parameters is None else min(trainable_parameters, matmul)
    return 6.0 * trained + 4.0 * (matmul - trained) + 12.0 * layers * width * seq_len


def utilization(tokens_per_s: float, model_config: Any, total_parameters: int,
                seq_len: float, peak: float | None, devices: int = 1,
                trainable_parameters: int | None = None) -> dict[str, float]:
    """``model_tflops_per_s`` per device, and ``mfu`` when the peak is known."""
    per_device = tokens_per_s / max(devices, 1)
    tflops = per_device * flops_per_token(model_config, total_parameters, seq_len,
                                          trainable_parameters) / 1e12
    out = {"model_tflops_per_s": round(tflops, 4)}
    if peak:
        out["mfu"] = round(tflops / peak, 5)
    return out
