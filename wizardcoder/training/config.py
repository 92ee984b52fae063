"""The `train` section of params.yaml.

Keys are named after `transformers.TrainingArguments` fields wherever one exists, so a
reader who knows the HF Trainer knows the params. The dataclass DEFAULTS are WizardCoder's
published recipe (lr 2e-5, cosine, 30 warmup steps, 3 epochs, length 2048, 16 x 4 per GPU
on 8 GPUs = batch 512); params.yaml overrides them with tiny values so the default
pipeline runs on a CPU.

The process layout the config asks for is settled here too: the DeepSpeed JSON path, the
rendezvous variables of a launcher-less single process, and the re-exec under `deepspeed`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
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
LAUNCHERS = ("none", "deepspeed")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
              "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr")

# Fields that change how a run is driven or reported, not what it computes: they are left
# out of the checkpoint key so that e.g. logging more often does not discard a half-done run.
NON_SEMANTIC_FIELDS = frozenset({
    "logging_steps", "save_steps", "save_total_limit", "keep_checkpoints", "launcher",
    "num_gpus", "num_nodes", "hostfile", "master_port",
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
    logging_steps: int = option(2, help="Log loss / lr / grad norm every N optimizer steps.")
    save_steps: int = option(
        50, help="Checkpoint every N steps into the durable cache; a killed run resumes there.")
    save_total_limit: int = option(2, help="Checkpoints kept in the cache while training.")
    keep_checkpoints: bool = option(
        False, help="Keep the cached checkpoints after a successful run (they hold optimizer "
                    "state: several times the model size).")
    seed: int = option(42, help="Seed for init, shuffling and the eval split.")
    eval_fraction: float = option(
        0.0, help="Fraction of rows held out for eval_loss (0 = no eval split).")
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
    hostfile: str | None = option(None, help="DeepSpeed hostfile for multi-node runs.")
    master_port: int | None = option(
        None, help="Rendezvous port (null = a free port is picked).")
    peak_tflops: float | None = option(
        None, help="Peak dense bf16/fp16 TFLOP/s of one device, for the MFU metric; null = "
                   "looked up by CUDA device name (H100, H200, A100, ...), no MFU on CPU.")

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


# --- processes and DeepSpeed ------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_process_env(config: TrainConfig) -> dict[str, str]:
    """Rendezvous variables DeepSpeed needs when no launcher set them.

    Without them deepspeed.init_distributed falls back to MPI discovery and fails
    importing mpi4py. Existing values (a launcher's) are never overwritten.
    """
    wanted = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(config.master_port or free_port())}
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    return added


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


def under_launcher() -> bool:
    """True inside a process started by the deepspeed/torchrun launcher."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def deepspeed_launch_command(config: TrainConfig, argv: list[str],
                             module: str | None = None) -> list[str]:
    """``deepspeed ... <script or --module m> args``; --no_local_rank keeps argv unchanged.

    ``argv`` is ``[script, *args]``, or with ``module`` the module's arguments only. Each
    worker reads its rank from LOCAL_RANK, so the stage's argument parser needs no
    ``--local_rank`` option.
    """
    cmd = ["deepspeed", "--no_local_rank", "--num_nodes", str(config.num_nodes)]
    if config.num_gpus is not None:
        cmd += ["--num_gpus", str(config.num_gpus)]
    if config.hostfile:
        cmd += ["--hostfile", config.hostfile]
    cmd += ["--master_port", str(config.master_port or free_port())]
    if module:
        cmd += ["--module", module, *argv]
    else:
        cmd += [argv[0], *argv[1:]]
    return cmd


def maybe_relaunch(config: TrainConfig, argv: list[str] | None = None,
                   module: str | None = None) -> None:
    """With ``launcher: deepspeed``, replace this process by the deepspeed launcher.

    Call it first thing in the stage (before heavy imports); it returns normally when no
    relaunch is needed, including inside the launched workers.
    """
    if config.launcher != "deepspeed" or under_launcher():
        return
    if shutil.which("deepspeed") is None:
        raise ConfigError("train.launcher: 'deepspeed' needs the deepspeed command on PATH")
    cmd = deepspeed_launch_command(config, list(argv if argv is not None else sys.argv),
                                   module=module)
    log.info("relaunching under DeepSpeed: %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(cmd[0], cmd)
