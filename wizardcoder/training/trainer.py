"""Supervised fine-tuning with the HF Trainer, optionally under DeepSpeed.

Checkpoints live in the durable cache (``cache_dir()/train-checkpoints/<key>``), keyed by
the config and the sha256 of the training data: DVC deletes stage outputs before a rerun,
so a killed multi-hour run could not resume from checkpoints kept in its output directory.
The final model directory is written once, at the very end, and moved into place whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from wizardcoder.errors import ConfigError, DataError
from wizardcoder.jsonl import write_json
from wizardcoder.paths import cache_dir
from wizardcoder.training.config import (
    NON_SEMANTIC_FIELDS,
    TrainConfig,
    resolve_deepspeed_config,
    resolve_precision,
    single_process_env,
)
from wizardcoder.training.data import (
    SupervisedCollator,
    encode_rows,
    ensure_pad_token,
    file_sha256,
    load_rows,
    split_rows,
)
from wizardcoder.training.lora import apply_lora, parameter_counts, save_lora_model
from wizardcoder.training.model import (
    describe_source,
    load_base_model,
    model_card,
    publish_dir,
)
from wizardcoder.training.packing import (
    REAL_TOKENS_KEY,
    PackedCollator,
    pack_dataset,
    uses_flash_attention,
)

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: marks it complete


# --- checkpoints -----------------------------------------------------------------------

def checkpoint_key(config: TrainConfig, data_sha256: str) -> str:
    """Same training computation -> same key; logging/saving cadence does not count."""
    semantic = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in NON_SEMANTIC_FIELDS}
    blob = json.dumps({"config": semantic, "data": data_sha256}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_root(config: TrainConfig, data_sha256: str) -> Path:
    return cache_dir() / "train-checkpoints" / checkpoint_key(config, data_sha256)


def last_checkpoint(root: Path, clean: bool = False) -> Path | None:
    """The newest complete checkpoint under ``root``.

    A run killed while saving leaves a checkpoint without trainer_state.json; with
    ``clean`` such leftovers are deleted so the Trainer does not rotate or reuse them.
    """
    if not root.is_dir():
        return None
    found = []
    for path in root.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            found.append((int(suffix), path))
    best = None
    for _, path in sorted(found, reverse=True):
        if (path / TRAINER_STATE).is_file():
            best = best or path
        elif best is None and clean:
            log.warning("removing incomplete checkpoint %s", path)
            shutil.rmtree(path, ignore_errors=True)
    return best


# --- logging -----------------------------------------------------------------------------

def train_logger(run=None):
    """A TrainerCallback forwarding loss, learning_rate, grad_norm and tokens/s to ``run``.

    Built on first use so that importing this module does not import transformers.
    tokens/s counts non-padding tokens over the interval since the previous log, so it
    reflects the current speed rather than a run-long average. ``.history`` keeps the rows.
    """
    global _TrainLogger
    if _TrainLogger is None:
        from transformers import TrainerCallback

        class TrainLogger(TrainerCallback):
            def __init__(self, run=None):
                self.run = run
                self.history: list[dict[str, float]] = []
                self._t: float | None = None
                self._tokens = 0
                self.start_tokens = 0  # tokens already seen by a resumed checkpoint
                self.first_log: tuple[float, int] | None = None  # (time, tokens seen)
                self.last_log: tuple[float, int] | None = None

            def on_train_begin(self, args, state, control, **kwargs):
                self._t = time.perf_counter()
                self._tokens = self.start_tokens = state.num_input_tokens_seen

            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                now = time.perf_counter()
                row: dict[str, float] = {}
                if "loss" in logs:
                    row = {k: float(logs[k])
                           for k in ("loss", "learning_rate", "grad_norm", "epoch")
                           if isinstance(logs.get(k), (int, float))}
                    seen = state.num_input_tokens_seen
                    if self._t is not None and now > self._t:
                        row["tokens_per_s"] = (seen - self._tokens) / (now - self._t)
                    self._t, self._tokens = now, seen
                    self.first_log = self.first_log or (now, seen)
                    self.last_log = (now, seen)
                    self.history.append({"step": state.global_step, **row})
                if "eval_loss" in logs:
                    row["eval_loss"] = float(logs["eval_loss"])
                if row and self.run is not None and state.is_world_process_zero:
                    self.run.log_metrics(row, step=state.global_step)

            def steady_tokens_per_s(self) -> float | None:
                """Tokens/s from the first log to the last: start-up and the first
                step (allocator warm-up, DeepSpeed init, kernel autotuning) left out."""
                if not (self.first_log and self.last_log) or self.last_log == self.first_log:
                    return None
                (t0, n0), (t1, n1) = self.first_log, self.last_log
                return (n1 - n0) / (t1 - t0) if t1 > t0 else None

        _TrainLogger = TrainLogger
    return _TrainLogger(run)


_TrainLogger = None


def sft_trainer_class():
    """``transformers.Trainer`` that counts real tokens of packed batches.

    Packed batches have no attention_mask, and the stock fallback (tokens != pad id) would
    miss every EOS when pad == EOS and count the pad segments otherwise; the collator
    counts them instead (``REAL_TOKENS_KEY``), and the key never reaches the model.
    """
    global _SFTTrainer
    if _SFTTrainer is None:
        from transformers import Trainer

        class SFTTrainer(Trainer):
            def compute_loss(self, model, inputs, *args, **kwargs):
                inputs = {k: v for k, v in inputs.items() if k != REAL_TOKENS_KEY}
                return super().compute_loss(model, inputs, *args, **kwargs)

            def _track_num_input_tokens(self, inputs):
                real = inputs.get(REAL_TOKENS_KEY)
                if real is None or self.args.include_num_input_tokens_seen == "no":
                    return super()._track_num_input_tokens(inputs)
                import torch

                count = torch.as_tensor(real, device=self.args.device).sum().to(torch.int64)
                self.state.num_input_tokens_seen += self.accelerator.gather(count).sum().item()

        _SFTTrainer = SFTTrainer
    return _SFTTrainer


_SFTTrainer = None


# --- training ----------------------------------------------------------------------------

def build_training_args(config: TrainConfig, output_dir: Path, precision: str,
                        deepspeed_path: Path | None):
    """TrainingArguments from the config; built BEFORE the model under ZeRO-3 on purpose."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old
    # name still works but warns); the params key keeps the name every recipe uses.
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names \
        else "gradient_checkpointing"
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        **{ckpt: config.gradient_checkpointing, f"{ckpt}_kwargs": {"use_reentrant": False}},
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # CPU bf16 autocast must be asked for explicitly ("doesn't support bf16/gpu" otherwise)
        use_cpu=precision == "bf16" and not _cuda(),
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="no",
        deepspeed=str(deepspeed_path) if deepspeed_path else None,
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),  # pinning without a GPU only warns
    )


def _speed_metrics(config: TrainConfig, model, logger_cb, stats, total_parameters: int
                   ) -> dict[str, Any]:
    """Steady-state tokens/s, model TFLOP/s and MFU per device, peak GPU memory."""
    import torch

    from wizardcoder.training.flops import peak_tflops, utilization

    out: dict[str, Any] = {}
    steady = logger_cb.steady_tokens_per_s()
    if steady is None:
        return out
    out["steady_tokens_per_s"] = round(steady, 1)
    devices = torch.distributed.get_world_size() \
        if torch.distributed.is_available() and torch.distributed.is_initialized() else 1
    peak = config.peak_tflops
    if peak is None and _cuda():
        peak = peak_tflops(torch.cuda.get_device_name())
    # Attention is counted over the examples' own lengths: packed rows are block-diagonal.
    seq_len = round(stats.tokens / stats.examples) if stats.examples else config.max_length
    out.update(utilization(steady, model.config, total_parameters, seq_len, peak, devices))
    if _cuda():
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_training(config: TrainConfig, train_file: str | Path, output_dir: str | Path,
                 metrics_path: str | Path, plots_path: str | Path, run=None,
                 callbacks: list | None = None) -> dict[str, Any]:
    """Fine-tune ``config.base_model`` on ``train_file`` rows; returns the metrics written.

    Resumes from the newest complete checkpoint of an identical earlier run. Writes
    ``output_dir`` (model, tokenizer, generation config, README.md), ``metrics_path`` and
    ``plots_path`` (per-step loss and learning rate). ``run`` is a tracking.StageRun;
    ``callbacks`` are extra TrainerCallbacks (tests use them to interrupt a run).
    """
    train_file, output_dir = Path(train_file), Path(output_dir)
    precision = resolve_precision(config)
    if precision == "fp16" and not _cuda():
        raise ConfigError("train.precision: fp16 needs a CUDA GPU; use fp32 or bf16 here")
    ds_path = resolve_deepspeed_config(config)
    if ds_path is not None:
        added = single_process_env(config)
        if added:
            log.info("DeepSpeed without a launcher: set %s", ", ".join(sorted(added)))

    rows = load_rows(train_file)  # first: a missing or malformed file is a DataError
    data_sha = file_sha256(train_file)
    ckpt_root = checkpoint_root(config, data_sha)
    args = build_training_args(config, ckpt_root, precision, ds_path)
    train_rows, eval_rows = split_rows(rows, config.eval_fraction, config.seed, train_file)

    model, tokenizer = load_base_model(config, precision)
    pad_action = ensure_pad_token(tokenizer, model)
    train_ds = encode_rows(tokenizer, train_rows, config.max_length, train_file)
    eval_ds = encode_rows(tokenizer, eval_rows, config.max_length, train_file) \
        if eval_rows else None
    if len(train_ds) == 0:
        raise DataError(train_file, None, None,
                        f"no trainable rows: all {len(train_rows)} prompts fill "
                        f"train.max_length={config.max_length}")
    stats = train_ds.stats
    log.info("train rows %d (truncated %d, dropped %d), %d tokens; pad token: %s",
             stats.examples, stats.truncated_examples, stats.dropped_examples, stats.tokens,
             pad_action)
    if config.packing:
        train_ds = pack_dataset(train_ds, config.max_length)
        eval_ds = pack_dataset(eval_ds, config.max_length) if eval_ds else None
        collator = PackedCollator(tokenizer.pad_token_id, flatten=uses_flash_attention(model))
        log.info("packing: %s", train_ds.pack_stats.as_dict())
    else:
        collator = SupervisedCollator(tokenizer.pad_token_id)
    if config.lora_r > 0:
        model = apply_lora(model, config)
    trainable, total = parameter_counts(model)

    logger_cb = train_logger(run)
    trainer = sft_trainer_class()(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collator, processing_class=tokenizer,
        callbacks=[logger_cb, *(callbacks or [])])
    resume = last_checkpoint(ckpt_root, clean=trainer.is_world_process_zero())
    if resume is not None:
        log.info("resuming from %s", resume)
    if run is not None and trainer.is_world_process_zero():
        run.log_params({"train_data_sha256": data_sha, "checkpoint_dir": str(ckpt_root),
                        "resumed_from": str(resume) if resume else "none",
                        "resolved_precision": precision})
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    runtime = float(output.metrics.get("train_runtime", 0.0))
    session_steps = trainer.state.global_step - _step_of(resume)
    session_tokens = trainer.state.num_input_tokens_seen - logger_cb.start_tokens
    metrics: dict[str, Any] = {
        "train_loss": float(losses[-1]) if losses else float(output.training_loss),
        "train_loss_mean": float(output.training_loss),
        "train_runtime_s": round(runtime, 3),  # this process only, when resumed
        "seconds_per_step": round(runtime / session_steps, 3) if session_steps else None,
        "train_tokens_per_s": round(session_tokens / runtime, 1) if runtime else None,
        "train_samples": stats.examples,
        "train_tokens": stats.tokens,
        "train_response_tokens": stats.response_tokens,
        "tokens_seen": int(trainer.state.num_input_tokens_seen),
        "truncated_examples": stats.truncated_examples,
        "dropped_examples": stats.dropped_examples,
        "global_step": int(trainer.state.global_step),
        "resumed_from_step": _step_of(resume),
        "precision": precision,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    if train_ds.pack_stats is not None:
        metrics.update(train_ds.pack_stats.as_dict())
    metrics.update(_speed_metrics(config, model, logger_cb, stats, total))
    if eval_ds is not None and len(eval_ds):
        metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])
        metrics["eval_samples"] = eval_ds.stats.examples
        metrics["eval_truncated_examples"] = eval_ds.stats.truncated_examples
    if not all(math.isfinite(metrics[k]) for k in ("train_loss", "train_loss_mean")):
        log.warning("training loss is not finite: %s", metrics["train_loss"])

    _save_final(trainer, model, tokenizer, config, train_file, data_sha, output_dir, metrics)
    if trainer.is_world_process_zero():
        rates = {row["step"]: row["tokens_per_s"] for row in logger_cb.history
                 if "tokens_per_s" in row}
        plots = [{"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate"),
                  "tokens_per_s": round(rates[e["step"]], 1) if e["step"] in rates else None}
                 for e in trainer.state.log_history if "loss" in e]
        write_json(plots_path, plots)
        write_json(metrics_path, metrics)
        if run is not None:
            run.log_metrics({k: v for k, v in metrics.items() if k != "resumed_from_step"})
            run.log_artifact(metrics_path)
            run.log_artifact(output_dir / "README.md")
        if not config.keep_checkpoints:
            shutil.rmtree(ckpt_root, ignore_errors=True)
    return metrics


def _step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):]) if checkpoint else 0


def _save_final(trainer, model, tokenizer, config: TrainConfig, train_file: Path,
                data_sha: str, output_dir: Path, metrics: dict) -> None:
    """Save into a staging directory next to ``output_dir``, then rename it into place.

    Every rank calls save_model (ZeRO-3 gathers the partitioned weights collectively);
    only rank 0 writes files. The staging name is fixed so all ranks agree on it.
    """
    staging = output_dir.parent / f".{output_dir.name}.staging"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        gen.eos_token_id = gen.eos_token_id if gen.eos_token_id is not None \
            else tokenizer.eos_token_id
        gen.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = True  # the saved model is for generation
    if config.lora_r > 0:
        save_lora_model(trainer, model, staging, trainer.is_world_process_zero())
    else:
        trainer.save_model(str(staging))
    if not trainer.is_world_process_zero():
        return
    # A pickle of TrainingArguments: not needed to use the model, and it differs run to run.
    (staging / "training_args.bin").unlink(missing_ok=True)
    if gen is not None and not (staging / "generation_config.json").exists():
        gen.save_pretrained(str(staging))
    if not (staging / "tokenizer_config.json").exists():
        tokenizer.save_pretrained(str(staging))
    card = model_card(describe_source(config), data_sha, str(train_file),
                      dataclasses.asdict(config), metrics)
    (staging / "README.md").write_text(card, encoding="utf-8")
    for path in staging.iterdir():  # safetensors writes 0600; servers may run as another user
        path.chmod(0o644)
    publish_dir(staging, output_dir)
