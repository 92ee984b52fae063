"""The final model directory: weights in the save dtype, tokenizer, model card, atomic publish.

The model card (``README.md``) carries the YAML header the Hugging Face Hub reads
(``base_model``, ``datasets``, ``license``, ``library_name``, ``tags``, library versions)
and only facts that are identical when the weights' inputs are identical: the `train` keys
that can change the weights (not ``logging_steps``, ``save_steps``... marked
``affects_outputs=False``) and facts of the data and the weights (rows, tokens, steps,
parameters, eval loss). No run times, tokens/s, MFU, dates or resume points (the run facts,
``metrics/run_facts/train.json``) and no logged training loss (``metrics/train.json``: it is
averaged over ``logging_steps``), so a rerun of the same inputs yields a byte-identical
card, and the model's hash (and what generation keys by it) moves only with its weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from wizardcoder.config import output_fields
from wizardcoder.train.config import TrainConfig
from wizardcoder.train.lora import save_lora_model
from wizardcoder.train.model import describe_source

# The bundled GGUF is a Q4_1 quantization of this Hub model.
EMBEDDED_BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_LICENSE = "apache-2.0"
# Metrics that differ between two runs of the same inputs (speed, time, hardware, resume):
# the run facts (metrics/run_facts/train.json and MLflow), never in metrics/train.json or the
# model card.
RUN_DEPENDENT_METRICS = frozenset({
    "train_runtime_s", "seconds_per_step", "train_tokens_per_s", "steady_tokens_per_s",
    "model_tflops_per_s", "mfu", "peak_gpu_memory_gib", "resumed_from_step",
})
# Metrics that depend on settings that change no weight (the logged loss is averaged, and
# rounded, over train.logging_steps): metrics/train.json, not the model card.
LOGGING_DEPENDENT_METRICS = frozenset({"train_loss", "train_loss_mean"})


# The training figures people compare across experiments (metrics/train.json, a DVC metric);
# the rest (rows, tokens, steps, parameters, precision) go to metrics/details/train.json.
HEADLINE_KEYS = ("train_loss", "eval_loss")


def headline(metrics: dict) -> dict:
    """The final training loss and, with train.eval_fraction, the eval loss."""
    return {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}


def split_run_facts(metrics: dict) -> tuple[dict, dict]:
    """(metrics for metrics/train.json, run facts): the run-dependent figures apart."""
    return ({k: v for k, v in metrics.items() if k not in RUN_DEPENDENT_METRICS},
            {k: v for k, v in metrics.items() if k in RUN_DEPENDENT_METRICS})


def card_facts(metrics: dict) -> dict:
    """The figures the model card holds: those fixed by the weights' inputs."""
    return {k: v for k, v in metrics.items()
            if k not in RUN_DEPENDENT_METRICS and k not in LOGGING_DEPENDENT_METRICS}


def card_params(config: TrainConfig) -> dict:
    """The `train` keys that can change the weights (affects_outputs)."""
    keep = set(output_fields(TrainConfig))
    return {k: v for k, v in dataclasses.asdict(config).items() if k in keep}
DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def save_final(trainer, model, tokenizer, config: TrainConfig, train_file: Path,
               data_sha: str, output_dir: Path, metrics: dict, save_dtype: str) -> None:
    """Save into a staging directory next to ``output_dir``, then rename it into place.

    Every rank calls save_model (ZeRO-3 gathers the partitioned weights collectively);
    only rank 0 writes files. The staging name is fixed so all ranks agree on it.
    """
    is_main = trainer.is_world_process_zero()
    staging = output_dir.parent / f".{output_dir.name}.staging"
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = gen.eos_token_id if gen.eos_token_id is not None \
            else tokenizer.eos_token_id
        gen.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = True  # the saved model is for generation
    if config.lora_r > 0:
        save_lora_model(trainer, model, staging, is_main)
    else:
        trainer.save_model(str(staging))
    if not is_main:
        return
    # A pickle of TrainingArguments: not needed to use the model, and it differs run to run.
    (staging / "training_args.bin").unlink(missing_ok=True)
    convert_weights(staging, save_dtype)
    if gen is not None and not (staging / "generation_config.json").exists():
        gen.save_pretrained(str(staging))
    if not (staging / "tokenizer_config.json").exists():
        tokenizer.save_pretrained(str(staging))
    card = model_card(config, data_sha, str(train_file), metrics, save_dtype)
    (staging / "README.md").write_text(card, encoding="utf-8")
    for path in staging.iterdir():  # safetensors writes 0600; servers may run as another user
        path.chmod(0o644)
    publish_dir(staging, output_dir)


def convert_weights(model_dir: Path, dtype_name: str) -> None:
    """Cast the floating-point tensors of the saved safetensors files to ``dtype_name``.

    Done on the files rather than the model, so the plain, DeepSpeed, ZeRO-3 (gathered
    16-bit) and merged-LoRA saves all end the same way; config.json records the dtype and
    a sharded index its new total size.
    """
    import torch
    from safetensors.torch import load_file, save_file

    dtype = getattr(torch, dtype_name)
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors = load_file(str(path))
        changed = False
        for name, tensor in tensors.items():
            if tensor.is_floating_point() and tensor.dtype != dtype:
                tensors[name] = tensor.to(dtype).contiguous()
                changed = True
            total += tensors[name].numel() * tensors[name].element_size()
        if changed:
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, path)
    config_path = model_dir / "config.json"
    if config_path.is_file():
        data = json.loads(config_path.read_text(encoding="utf-8"))
        for key in ("dtype", "torch_dtype"):
            if key in data:
                data[key] = dtype_name
        config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n",
                               encoding="utf-8")
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        data.setdefault("metadata", {})["total_size"] = total
        index.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def library_versions(config: TrainConfig) -> dict[str, str]:
    """Versions of the libraries that produced the weights (part of the card's header)."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["transformers", "torch", "accelerate"]
    if config.lora_r > 0:
        names.append("peft")
    if config.deepspeed:
        names.append("deepspeed")
    if config.use_liger_kernel:
        names.append("liger-kernel")
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def hub_base_model(config: TrainConfig) -> str | None:
    """The base model as a Hub id, or None for a local directory (not a Hub reference)."""
    if config.is_embedded:
        return EMBEDDED_BASE_MODEL_ID
    if Path(config.base_model).expanduser().exists():
        return None
    return config.base_model


def _yaml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def card_header(config: TrainConfig, save_dtype: str) -> list[str]:
    base = hub_base_model(config)
    license_ = config.card_license or (EMBEDDED_LICENSE if config.is_embedded else "other")
    tags = ["wizardcoder", "code", "evol-instruct", "sft"]
    if config.lora_r > 0:
        tags.append("lora")
    if config.packing:
        tags.append("packing")
    lines = ["---"]
    if base:
        lines += [f"base_model: {json.dumps(base)}", "base_model_relation: finetune"]
    if config.card_datasets:
        lines.append(f"datasets: {_yaml_list(config.card_datasets)}")
    lines += [f"license: {json.dumps(license_)}", "library_name: transformers",
              "pipeline_tag: text-generation", f"tags: {_yaml_list(tags)}",
              f"torch_dtype: {save_dtype}", "library_versions:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in library_versions(config).items()]
    lines.append("---")
    return lines


def model_card(config: TrainConfig, data_sha256: str, train_file: str, metrics: dict,
               save_dtype: str) -> str:
    """README.md of the fine-tuned model: where it came from, in a Hub-readable header."""
    params = card_params(config)
    stable = card_facts(metrics)
    lines = [
        *card_header(config, save_dtype),
        "",
        "# WizardCoder-style fine-tune",
        "",
        "Supervised fine-tuning on Code Evol-Instruct data (loss on responses only), "
        "prompted with the Alpaca template of `wizardcoder.prompt_template`.",
        "",
        f"- Base model: `{describe_source(config)}`",
        f"- Training data: `{train_file}`",
        f"- Training data sha256: `{data_sha256}`",
        f"- Fine-tuning: {_method(params)}",
        "- Packing: " + ("on (several examples per row, no attention across them)"
                         if params.get("packing") else "off"),
        f"- Weights saved in: {save_dtype}",
        "",
        "## Parameters (params.yaml `train`, the keys that can change the weights)",
        "",
        "```json",
        json.dumps(params, indent=2, sort_keys=True),
        "```",
        "",
        "## Data and model facts",
        "",
        "The training loss is in the stage's `metrics/train.json`, run times, throughput "
        "and MFU in `metrics/run_facts/train.json`, not here: this card depends on the "
        "weights' inputs only.",
        "",
        "```json",
        json.dumps(stable, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def _method(params: dict[str, Any]) -> str:
    if not params.get("lora_r"):
        return "full (all weights)"
    return (f"LoRA r={params['lora_r']} alpha={params.get('lora_alpha')} on "
            f"{params.get('lora_target_modules')}, merged into these weights; the adapter "
            "alone is in `adapter/`")


def publish_dir(staging: Path, output_dir: Path) -> None:
    """Move a finished model directory into place; the old one goes only once it is whole."""
    output_dir = Path(output_dir)
    old = None
    if output_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
        os.replace(output_dir, old / "model")
    os.replace(staging, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
