"""Supervised fine-tuning with the HF Trainer, optionally under DeepSpeed.

Checkpoints live outside DVC's outputs, keyed by everything that decides the computation
(``checkpoints.py``): a killed multi-hour run resumes there, on every rank from the same
step. The final model directory is written once, at the very end, and moved into place
whole.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from wizardcoder.errors import ConfigError, DataError
from wizardcoder.headline import write_metrics
from wizardcoder.jsonl import write_json
from wizardcoder.train.checkpoints import (
    RunLayout,
    agreed_checkpoint,
    check_shared,
    checkpoint_root,
    completion_callback,
    step_of,
)
from wizardcoder.train.config import (
    TrainConfig,
    check_attn_implementation,
    deepspeed_config_sha256,
    resolve_deepspeed_config,
    resolve_precision,
    resolve_save_dtype,
)
from wizardcoder.train.data import (
    SupervisedCollator,
    encode_rows,
    ensure_pad_token,
    file_sha256,
    load_rows,
    split_rows,
)
from wizardcoder.train.launch import single_process_env, world_layout
from wizardcoder.train.lora import apply_lora, parameter_counts
from wizardcoder.train.model import load_base_model
from wizardcoder.train.output import headline, save_final, split_run_facts
from wizardcoder.train.packing import (
    REAL_TOKENS_KEY,
    PackedCollator,
    pack_dataset,
    packing_check_callback,
    uses_flash_attention,
)

log = logging.getLogger(__name__)

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
                        deepspeed_path: Path | None, has_eval: bool = False):
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
        eval_strategy="steps" if has_eval and config.eval_steps else "no",
        eval_steps=config.eval_steps or None,
        use_liger_kernel=config.use_liger_kernel,
        neftune_noise_alpha=config.neftune_noise_alpha,
        deepspeed=str(deepspeed_path) if deepspeed_path else None,
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),  # pinning without a GPU only warns
    )


def _speed_metrics(config: TrainConfig, model, logger_cb, lengths: list[int],
                   trainable: int, total: int) -> dict[str, Any]:
    """Steady-state tokens/s, model TFLOP/s and MFU per device, peak GPU memory."""
    import torch

    from wizardcoder.train.flops import attention_length, peak_tflops, utilization

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
    # Attention is counted over each example's own length (packed rows are block-diagonal)
    # and weighted by it: a token of a long example attends to more keys.
    seq_len = attention_length(lengths) if lengths else config.max_length
    out.update(utilization(steady, model.config, total, seq_len, peak, devices,
                           trainable_parameters=trainable))
    if _cuda():
        out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_training(config: TrainConfig, train_file: str | Path, output_dir: str | Path,
                 metrics_path: str | Path, plots_path: str | Path, run=None,
                 callbacks: list | None = None,
                 eval_plots_path: str | Path | None = None,
                 facts_path: str | Path | None = None,
                 speed_plots_path: str | Path | None = None,
                 details_path: str | Path | None = None) -> dict[str, Any]:
    """Fine-tune ``config.base_model`` on ``train_file`` rows; returns the metrics and the run
    facts (one dict).

    Resumes from the newest checkpoint of an identical earlier run that every rank sees as
    complete. Writes ``output_dir`` (model, tokenizer, generation config, README.md),
    ``metrics_path`` (losses, rows, tokens, steps: identical for identical inputs),
    ``plots_path`` (per-step loss and learning rate), ``eval_plots_path`` (eval loss per eval
    step) and, when given, the run facts: ``facts_path`` (run time, tokens/s, MFU, resume
    point) and ``speed_plots_path`` (tokens/s per logged step); all of it goes to ``run``
    (a tracking.StageRun) too. ``callbacks`` are extra TrainerCallbacks (tests use them to
    interrupt a run).
    """
    train_file, output_dir = Path(train_file), Path(output_dir)
    precision = resolve_precision(config)
    if precision == "fp16" and not _cuda():
        raise ConfigError("train.precision: fp16 needs a CUDA GPU; use fp32 or bf16 here")
    check_attn_implementation(config)
    ds_path = resolve_deepspeed_config(config)
    if ds_path is not None:
        added = single_process_env(config)
        if added:
            log.info("DeepSpeed without a launcher: set %s", ", ".join(sorted(added)))

    rows = load_rows(train_file)  # first: a missing or malformed file is a DataError
    data_sha = file_sha256(train_file)
    world_size, num_nodes = world_layout()
    layout = RunLayout(world_size=world_size, num_nodes=num_nodes, precision=precision,
                       deepspeed_sha256=deepspeed_config_sha256(ds_path))
    ckpt_root = checkpoint_root(config, data_sha, layout)
    train_rows, eval_rows = split_rows(rows, config.eval_fraction, config.seed, train_file)
    args = build_training_args(config, ckpt_root, precision, ds_path, has_eval=bool(eval_rows))

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
    lengths = [len(e["input_ids"]) for e in train_ds.examples]
    log.info("train rows %d (truncated %d, dropped %d), %d tokens; pad token: %s",
             stats.examples, stats.truncated_examples, stats.dropped_examples, stats.tokens,
             pad_action)
    extra_callbacks = []
    if config.packing:
        extra_callbacks.append(packing_check_callback(
            train_ds.examples, precision, config.packing_check_tolerance))
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
    rank = int(os.environ.get("RANK", "0"))
    trainer = sft_trainer_class()(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
        data_collator=collator, processing_class=tokenizer,
        callbacks=[logger_cb, completion_callback(rank), *extra_callbacks, *(callbacks or [])])
    is_main = trainer.is_world_process_zero()
    check_shared(ckpt_root, is_main)
    resume = agreed_checkpoint(ckpt_root, world_size, is_main)
    if resume is not None:
        log.info("resuming from %s", resume)
    if run is not None and is_main:
        run.log_params({"train_data_sha256": data_sha, "checkpoint_dir": str(ckpt_root),
                        "resumed_from": str(resume) if resume else "none",
                        "resolved_precision": precision, "world_size": world_size,
                        "num_nodes_resolved": num_nodes})
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    history = trainer.state.log_history
    losses = [(e["step"], e["loss"]) for e in history if "loss" in e]
    runtime = float(output.metrics.get("train_runtime", 0.0))
    session_steps = trainer.state.global_step - step_of(resume)
    session_tokens = trainer.state.num_input_tokens_seen - logger_cb.start_tokens
    metrics: dict[str, Any] = {
        "train_loss": float(losses[-1][1]) if losses else float(output.training_loss),
        # from the logged losses, each weighted by the steps it covers: a resumed run's
        # own average would cover only the steps after its resume
        "train_loss_mean": _mean_logged_loss(losses) if losses
        else float(output.training_loss),
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
        "resumed_from_step": step_of(resume),
        "precision": precision,
        "world_size": world_size,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    if train_ds.pack_stats is not None:
        metrics.update(train_ds.pack_stats.as_dict())
    metrics.update(_speed_metrics(config, model, logger_cb, lengths, trainable, total))
    if eval_ds is not None and len(eval_ds):
        last = [e for e in history
                if "eval_loss" in e and e.get("step") == trainer.state.global_step]
        metrics["eval_loss"] = float(last[-1]["eval_loss"] if last
                                     else trainer.evaluate()["eval_loss"])
        metrics["eval_samples"] = eval_ds.stats.examples
        metrics["eval_truncated_examples"] = eval_ds.stats.truncated_examples
    if not all(math.isfinite(metrics[k]) for k in ("train_loss", "train_loss_mean")):
        log.warning("training loss is not finite: %s", metrics["train_loss"])

    save_final(trainer, model, tokenizer, config, train_file, data_sha, output_dir, metrics,
               resolve_save_dtype(config, precision))
    if is_main:
        rates = {row["step"]: row["tokens_per_s"] for row in logger_cb.history
                 if "tokens_per_s" in row}
        plots = [{"step": e["step"], "loss": e["loss"], "learning_rate": e.get("learning_rate")}
                 for e in history if "loss" in e]
        write_json(plots_path, plots)
        if speed_plots_path is not None:
            write_json(speed_plots_path, [
                {"step": e["step"],
                 "tokens_per_s": round(rates[e["step"]], 1) if e["step"] in rates else None}
                for e in history if "loss" in e])
        if eval_plots_path is not None:
            evals = {e["step"]: float(e["eval_loss"]) for e in trainer.state.log_history
                     if "eval_loss" in e}
            write_json(eval_plots_path, [{"step": k, "eval_loss": v}
                                         for k, v in sorted(evals.items())])
        stable, facts = split_run_facts(metrics)
        # details_path (the DVC stage): the losses to metrics_path, the rest there.
        write_metrics(metrics_path, stable, headline(stable), details_path)
        if facts_path is not None:
            write_json(facts_path, facts)
        if run is not None:
            run.log_metrics({k: v for k, v in metrics.items() if k != "resumed_from_step"})
            run.log_artifact(metrics_path)
            if facts_path is not None:
                run.log_artifact(facts_path)
            run.log_artifact(output_dir / "README.md")
        if not config.keep_checkpoints:
            shutil.rmtree(ckpt_root, ignore_errors=True)
    return metrics


def _mean_logged_loss(losses: list[tuple[int, float]]) -> float:
    """Mean training loss over all steps from (step, loss averaged since the last log)."""
    total = steps = 0.0
    previous = 0
    for step, loss in losses:
        span = step - previous
        if span > 0:
            total += loss * span
            steps += span
        previous = step
    return total / steps if steps else float(losses[-1][1])
