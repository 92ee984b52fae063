"""The `train` section of params.yaml.

Keys are named after `transformers.TrainingArguments` fields wherever one exists, so a
reader who knows the HF Trainer knows the params. The dataclass DEFAULTS are WizardCoder's
published recipe (lr 2e-5, cosine, 30 warmup steps, 3 epochs, length 2048, 16 x 4 per GPU
on 8 GPUs = batch 512); params.yaml overrides them with tiny values so the default
pipeline runs on a CPU.

What the config resolves to on this machine is settled here too: the precision, the load
and save dtypes, the DeepSpeed JSON (path and content hash). The process layout (launcher,
nodes, environment forwarding) is in ``launch.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.config import option, require
from wizardcoder.embedded import EMBEDDED_NAME
from wizardcoder.errors import ConfigError
from wizardcoder.paths import project_root

log = logging.getLogger(__name__)

SECTION = "train"

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
LOAD_DTYPES = ("auto", "float32", "bfloat16", "float16")
SAVE_DTYPES = ("auto", "bfloat16", "float16", "float32")
LAUNCHERS = ("none", "deepspeed")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flex_attention")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr")

# Fields that change how a run is driven, reported or saved, not what it computes: they are
# left out of the checkpoint key so that e.g. logging more often does not discard a half-done
# run. num_gpus / num_nodes / launcher / deepspeed are out because the key holds what they
# resolve to instead (world size, nodes, the DeepSpeed JSON's content hash): see
# checkpoints.checkpoint_key.
NON_SEMANTIC_FIELDS = frozenset({
    "logging_steps", "save_steps", "save_total_limit", "keep_checkpoints", "launcher",
    "num_gpus", "num_nodes", "hostfile", "master_port", "checkpoint_dir", "deepspeed",
    "eval_steps", "save_dtype", "peak_tflops", "packing_check_tolerance", "card_license",
    "card_datasets",
})


@dataclass
class TrainConfig:
    """Supervised fine-tuning of a causal code LM on Evol-Instruct rows."""

    base_model: str = option(
        EMBEDDED_NAME,
        help="'embedded' (the bundled SmolLM2-135M-Instruct GGUF, no download), a Hugging "
             "Face model id, or a local model directory.")
    gguf_file: str | None = option(
        None, help="File name of a GGUF checkpoint inside base_model (for GGUF-only repos).")
    torch_dtype: str = option(
        "auto", choices=LOAD_DTYPES,
        help="dtype the weights are loaded in. 'auto': float32 (master weights for mixed "
             "precision) unless DeepSpeed runs in bf16/fp16, which then loads that dtype.")
    max_length: int = option(
        2048, help="Tokens per example (prompt + response + EOS); longer ones are truncated "
                   "and counted.")
    num_train_epochs: float = option(3.0, help="Epochs over the training data.")
    max_steps: int = option(-1, help="Optimizer steps; overrides num_train_epochs when > 0.")
    learning_rate: float = option(2e-5, help="Peak learning rate (AdamW).")
    lr_scheduler_type: str = option("cosine", choices=SCHEDULERS,
                                    help="Learning-rate schedule after warmup.")
    warmup_steps: int = option(30, help="Linear warmup steps.")
    per_device_train_batch_size: int = option(16, help="Micro-batch size per device.")
    gradient_accumulation_steps: int = option(
        4, help="Micro-batches per optimizer step (the paper: 16 x 4 x 8 GPUs = 512).")
    gradient_checkpointing: bool = option(
        True, help="Recompute activations in the backward pass: less memory, ~30% slower.")
    precision: str = option(
        "auto", choices=PRECISIONS,
        help="Mixed precision. 'auto': bf16 where the GPU supports it, else fp16 on CUDA, "
             "else fp32 (CPU).")
    weight_decay: float = option(0.0, help="AdamW weight decay.")
    max_grad_norm: float = option(1.0, help="Gradient clipping norm (0 disables).")
    logging_steps: int = option(2, help="Log loss / lr / grad norm every N optimizer steps.",
        affects_outputs=False)
    save_steps: int = option(
        50, help="Checkpoint every N steps into the durable cache; a killed run resumes there.",
        affects_outputs=False)
    save_total_limit: int = option(2, help="Checkpoints kept in the cache while training.",
        affects_outputs=False)
    keep_checkpoints: bool = option(
        False, help="Keep the cached checkpoints after a successful run (they hold optimizer "
                    "state: several times the model size).",
        affects_outputs=False)
    seed: int = option(42, help="Seed for init, shuffling and the eval split.")
    eval_fraction: float = option(
        0.0, help="Fraction of rows held out for eval_loss (0 = no eval split).")
    eval_steps: int = option(
        0, help="Evaluate on the eval split every N optimizer steps (eval loss per step in "
                "metrics/train_curve_eval.json, a DVC plot); 0 = only once at the end. "
                "Needs eval_fraction > 0.")
    attn_implementation: str = option(
        "sdpa", choices=ATTN_IMPLEMENTATIONS,
        help="Attention kernel: sdpa (PyTorch scaled_dot_product_attention), eager, "
             "flash_attention_2 (needs the flash-attn package and a CUDA GPU; packed batches "
             "take its varlen path), flex_attention (torch flex attention; CUDA only).")
    save_dtype: str = option(
        "auto", choices=SAVE_DTYPES,
        help="dtype of the saved weights. 'auto': bfloat16 when trained in bf16, else float32 "
             "(fp32 master weights saved in bf16 halve the DVC cache).")
    use_liger_kernel: bool = option(
        False, help="Liger fused kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) "
                    "through TrainingArguments.use_liger_kernel; needs the liger-kernel package.")
    neftune_noise_alpha: float | None = option(
        None, help="NEFTune: uniform noise of scale alpha/sqrt(L*d) on the input embeddings "
                   "while training (TrainingArguments.neftune_noise_alpha); null = off, the "
                   "paper uses 5.")
    packing_check_tolerance: float | None = option(
        None, help="With packing, a start-up check runs two examples packed and alone on the "
                   "actual model and refuses to pack if their logits differ by more than this "
                   "(max difference over the largest logit). null: 1e-3 for fp32, 5e-2 for "
                   "16-bit compute.",
        affects_outputs=False)
    packing: bool = option(
        False,
        help="Pack several examples into each row of up to max_length tokens (no padding). "
             "Examples never see each other: position_ids restart per example and the "
             "attention mask is block-diagonal. per_device_train_batch_size then counts "
             "packed rows, so a step holds more examples (see packing_examples_per_row).")
    lora_r: int = option(
        0, help="LoRA rank (peft); 0 = full fine-tuning. The merged model is saved in the "
                "output dir, the adapter in its 'adapter' subfolder.")
    lora_alpha: int = option(16, help="LoRA scaling numerator (scale = lora_alpha / lora_r).")
    lora_dropout: float = option(0.05, help="Dropout on the LoRA branch.")
    lora_target_modules: list[str] = option(
        default_factory=lambda: ["all-linear"],
        help="Module names to adapt, e.g. [q_proj, v_proj]; [all-linear] = every linear "
             "layer except the output head.")
    deepspeed: str | None = option(
        None, help="Path to a DeepSpeed JSON config (configs/deepspeed/zero2.json, zero3.json, "
                   "zero3_offload.json); null trains without DeepSpeed.")
    launcher: str = option(
        "none", choices=LAUNCHERS,
        help="'deepspeed': the stage re-executes itself under the `deepspeed` launcher "
             "(multi-GPU / multi-node); 'none': one process.")
    num_gpus: int | None = option(
        None, help="GPUs per node for the deepspeed launcher (null = all visible).")
    num_nodes: int = option(1, help="Nodes for the deepspeed launcher.")
    hostfile: str | None = option(None, help="DeepSpeed hostfile for multi-node runs.",
        affects_outputs=False)
    master_port: int | None = option(
        None, help="Rendezvous port on the first host. null: a free local port on one node; "
                   "with a hostfile, DeepSpeed's default 29500 (never probed on the launching "
                   "host, which may not be the first host).",
        affects_outputs=False)
    checkpoint_dir: str | None = option(
        None, help="Where resumable checkpoints go (one subdirectory per checkpoint key). "
                   "null = .cache/wizardcoder/train-checkpoints on this machine; multi-node "
                   "runs need a directory on storage every node mounts at the same path.",
        affects_outputs=False)
    card_license: str | None = option(
        None, help="License in the model card's Hub header; null = the embedded model's "
                   "apache-2.0, else 'other'. Fine-tunes inherit the base model's license.")
    card_datasets: list[str] = option(
        default_factory=list,
        help="Hub dataset ids for the model card's `datasets` header (e.g. "
             "[sahil2801/CodeAlpaca-20k]); the local training file is named in the body.")
    peak_tflops: float | None = option(
        None, help="Peak dense bf16/fp16 TFLOP/s of one device, for the MFU metric; null = "
                   "looked up by CUDA device name (H100, H200, A100, ...), no MFU on CPU.",
        affects_outputs=False)

    def __post_init__(self) -> None:
        s = SECTION
        require(isinstance(self.base_model, str) and self.base_model.strip() != "", s,
                "base_model", "'embedded', a model id or a local directory")
        require(self.gguf_file is None or self.gguf_file.endswith(".gguf"), s, "gguf_file",
                "null or a file name ending in .gguf")
        require(self.peak_tflops is None or self.peak_tflops > 0, s, "peak_tflops",
                "null or a positive number of TFLOP/s")
        require(self.max_length >= 16, s, "max_length", "an integer >= 16")
        require(self.num_train_epochs > 0, s, "num_train_epochs", "a number > 0")
        require(self.max_steps == -1 or self.max_steps > 0, s, "max_steps",
                "-1 (use num_train_epochs) or an integer > 0")
        require(0 < self.learning_rate < 1, s, "learning_rate", "a number in (0, 1)")
        require(self.warmup_steps >= 0, s, "warmup_steps", "an integer >= 0")
        require(self.per_device_train_batch_size >= 1, s, "per_device_train_batch_size",
                "an integer >= 1")
        require(self.gradient_accumulation_steps >= 1, s, "gradient_accumulation_steps",
                "an integer >= 1")
        require(self.weight_decay >= 0, s, "weight_decay", "a number >= 0")
        require(self.max_grad_norm >= 0, s, "max_grad_norm", "a number >= 0 (0 disables)")
        require(self.logging_steps >= 1, s, "logging_steps", "an integer >= 1")
        require(self.save_steps >= 1, s, "save_steps", "an integer >= 1")
        require(self.save_total_limit >= 1, s, "save_total_limit", "an integer >= 1")
        require(0.0 <= self.eval_fraction < 1.0, s, "eval_fraction", "a number in [0, 1)")
        require(self.lora_r >= 0, s, "lora_r", "an integer >= 0 (0 = full fine-tuning)")
        require(self.lora_alpha > 0, s, "lora_alpha", "an integer > 0")
        require(0.0 <= self.lora_dropout < 1.0, s, "lora_dropout", "a number in [0, 1)")
        require(bool(self.lora_target_modules)
                and all(isinstance(m, str) and m for m in self.lora_target_modules), s,
                "lora_target_modules", "a non-empty list of module names")
        require(self.deepspeed is None or self.deepspeed.endswith(".json"), s, "deepspeed",
                "null or the path of a DeepSpeed .json config")
        require(self.launcher == "none" or self.deepspeed is not None, s, "launcher",
                "'none' unless train.deepspeed names a config ('deepspeed' launches it)")
        require(self.num_gpus is None or self.num_gpus >= 1, s, "num_gpus",
                "null or an integer >= 1")
        require(self.num_nodes >= 1, s, "num_nodes", "an integer >= 1")
        require(self.master_port is None or 1024 <= self.master_port <= 65535, s,
                "master_port", "null or a port in 1024..65535")
        require(self.num_nodes == 1 or self.hostfile, s, "num_nodes",
                "1 unless train.hostfile lists the nodes")
        require(self.num_nodes == 1 or self.launcher == "deepspeed", s, "num_nodes",
                "1 unless train.launcher is 'deepspeed'")
        require(self.checkpoint_dir is None or self.checkpoint_dir.strip() != "", s,
                "checkpoint_dir", "null or a directory path")
        require(self.eval_steps >= 0, s, "eval_steps", "an integer >= 0 (0 = at the end only)")
        require(self.eval_steps == 0 or self.eval_fraction > 0, s, "eval_steps",
                "0 unless train.eval_fraction > 0 (there is nothing to evaluate on)")
        require(self.neftune_noise_alpha is None or self.neftune_noise_alpha > 0, s,
                "neftune_noise_alpha", "null or a number > 0 (e.g. 5)")
        require(self.packing_check_tolerance is None or self.packing_check_tolerance > 0, s,
                "packing_check_tolerance", "null or a number > 0")
        require(all(isinstance(d, str) and d.strip() for d in self.card_datasets), s,
                "card_datasets", "a list of Hub dataset ids")

    @property
    def is_embedded(self) -> bool:
        return self.base_model == EMBEDDED_NAME


def resolve_precision(config: TrainConfig) -> str:
    """'bf16' | 'fp16' | 'fp32' for this machine: 'auto' never asks a CPU for half precision."""
    import torch

    if config.precision != "auto":
        return config.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def resolve_load_dtype(config: TrainConfig, precision: str):
    """The torch dtype to load weights in.

    The plain Trainer's AMP needs float32 master weights (fp16 weights make its grad scaler
    fail), so 'auto' is float32 there; DeepSpeed keeps its own fp32 copies, so under
    DeepSpeed a half-precision run loads half-precision weights and halves host memory.
    """
    import torch

    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if config.torch_dtype != "auto":
        return names[config.torch_dtype]
    if config.deepspeed and precision == "bf16":
        return torch.bfloat16
    if config.deepspeed and precision == "fp16":
        return torch.float16
    return torch.float32


# --- DeepSpeed config --------------------------------------------------------------------

def resolve_deepspeed_config(config: TrainConfig) -> Path | None:
    """The DeepSpeed JSON as an absolute path (relative paths: cwd, then project root)."""
    if not config.deepspeed:
        return None
    path = Path(config.deepspeed).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, project_root() / path]
    for candidate in candidates:
        if candidate.is_file():
            try:
                json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"train.deepspeed: {candidate} is not valid JSON: {exc}") \
                    from None
            return candidate.resolve()
    raise ConfigError(f"train.deepspeed: expected an existing JSON file, got {config.deepspeed!r}")


def deepspeed_config_sha256(path: Path | None) -> str | None:
    """Hash of the JSON's content (parsed, keys sorted): reformatting does not change it,
    any edited value does, and moving or renaming the file does not."""
    if path is None:
        return None
    content = json.loads(path.read_text(encoding="utf-8"))
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def resolve_save_dtype(config: TrainConfig, precision: str) -> str:
    """'bfloat16' | 'float16' | 'float32' for the saved weights."""
    if config.save_dtype != "auto":
        return config.save_dtype
    return "bfloat16" if precision == "bf16" else "float32"


def check_attn_implementation(config: TrainConfig) -> None:
    """Fail before loading anything when the asked attention cannot run here."""
    import importlib.util

    import torch

    if config.attn_implementation == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None:
            raise ConfigError("train.attn_implementation: flash_attention_2 needs the flash-attn "
                              "package (pip install flash-attn); use sdpa otherwise")
        if not torch.cuda.is_available():
            raise ConfigError("train.attn_implementation: flash_attention_2 needs a CUDA GPU; "
                              "use sdpa on this machine")
    if config.attn_implementation == "flex_attention" and not torch.cuda.is_available():
        # torch's flex attention has no backward pass on CPU
        raise ConfigError("train.attn_implementation: flex_attention trains on a CUDA GPU only "
                          "(torch has no CPU backward for it); use sdpa on this machine")
    if config.use_liger_kernel and importlib.util.find_spec("liger_kernel") is None:
        raise ConfigError("train.use_liger_kernel: needs the liger-kernel package "
                          "(pip install liger-kernel)")
