"""Optional LoRA (``train.lora_r > 0``) through peft.

The base weights are frozen and low-rank adapters are trained on the target modules. At
the end the adapter is saved in ``<output_dir>/adapter`` and ALSO merged into the base
weights, which are saved as an ordinary full model in ``<output_dir>``: generation, vLLM
or any server loads it like a fully fine-tuned model, with no peft at inference time.
(The adapter must live in a subfolder: a model directory holding adapter_config.json
would be loaded by transformers as an adapter, not as the merged model.)
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from wizardcoder.train.config import TrainConfig

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
ALL_LINEAR = "all-linear"  # peft: every linear layer except the output head


def lora_config(config: TrainConfig):
    from peft import LoraConfig, TaskType

    targets = config.lora_target_modules
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=config.lora_r, lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout, bias="none",
        target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else list(targets))


def apply_lora(model, config: TrainConfig):
    """Wrap ``model`` in a peft LoRA model; only adapter weights keep requires_grad."""
    from peft import get_peft_model

    try:
        peft_model = get_peft_model(model, lora_config(config))
    except ValueError as exc:  # e.g. target modules that the model does not have
        from wizardcoder.errors import ConfigError

        raise ConfigError(f"train.lora_target_modules: {exc}") from None
    trainable, total = parameter_counts(peft_model)
    log.info("LoRA r=%d alpha=%s: %d of %d parameters trainable (%.2f%%)", config.lora_r,
             config.lora_alpha, trainable, total, 100.0 * trainable / max(total, 1))
    return peft_model


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; ZeRO-3 partitions report their full size."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", None) or p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _gathered(model):
    """Under ZeRO-3 the weights are partitioned: gather them all for the merge."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))


def save_lora_model(trainer, model, staging: Path, is_main: bool) -> None:
    """Adapter -> ``staging/adapter``; merged full model -> ``staging``.

    Every rank takes part (ZeRO-3 gathers collectively); only ``is_main`` writes. The
    merge modifies the in-memory model: call this last.
    """
    adapter_dir = staging / ADAPTER_DIR
    trainer.save_model(str(adapter_dir))
    with _gathered(model):
        if not is_main:
            return
        (adapter_dir / "training_args.bin").unlink(missing_ok=True)
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(str(staging))
