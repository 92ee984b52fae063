"""The train stage on a CUDA GPU: bf16, no DeepSpeed / ZeRO-2 / ZeRO-3, tokens/s and MFU.

    python bench/train_gpu.py --export-tokenizer .gpu/smollm2     # here: tokenizer + config
    python bench/train_gpu.py --tokenizer .gpu/smollm2 --data .gpu/train.jsonl   # on the GPU
    python bench/train_gpu.py ... --cases zero3,flash --kill-resume zero3   # + kill/resume

A benchmark, not a test. Each case runs the real train stage entry point
(``python -m stages.train``, MLflow off) in its own process on a params file of its own,
then reads the stage's metrics: ``steady_tokens_per_s`` (real tokens, first step left out),
``model_tflops_per_s`` and ``mfu`` (PaLM FLOP count, ``wizardcoder/train/flops.py``) and
``peak_gpu_memory_gib``. Ratios are against the first case of the same model size in this
run. ``--kill-resume CASE`` runs that case's stage a second time, SIGKILLs it once a
checkpoint is complete, resumes it and reports the largest loss and weight difference
from the uninterrupted run (the GPU counterpart of tests/test_training_resume.py).

Models: ``135m`` is SmolLM2-135M's architecture (the embedded GGUF's config.json) and
``1b`` a Llama-3.2-1B-shaped config (2048 wide, 16 layers, GQA 32/8, 8192 MLP) with the
same 49k tokenizer, both random-init: throughput does not depend on the weights, and the
GGUF itself (98 MB) is more than a GPU machine without network can be sent.
``--export-tokenizer`` writes the embedded model's tokenizer and config (a few MB) so a
machine without the bundled package can build both.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {
    "135m": {},  # the exported config as is
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
           "tie_word_embeddings": True},
}
# case name -> train params overriding BASE_PARAMS
CASES = {
    "padding": {"packing": False},
    "packing": {},
    "zero2": {"deepspeed": "configs/deepspeed/zero2.json"},
    "zero3": {"deepspeed": "configs/deepspeed/zero3.json"},
    "zero2-launcher": {"deepspeed": "configs/deepspeed/zero2.json", "launcher": "deepspeed",
                       "num_gpus": 1},
    "packing-ckpt": {"gradient_checkpointing": True},
    "flash": {"attn_implementation": "flash_attention_2"},  # packed rows: the varlen path
    "zero3-flash": {"deepspeed": "configs/deepspeed/zero3.json",
                    "attn_implementation": "flash_attention_2"},
}
BASE_PARAMS = {"max_length": 2048, "packing": True, "precision": "bf16", "learning_rate": 2e-5,
               "lr_scheduler_type": "cosine", "warmup_steps": 3, "logging_steps": 1,
               "save_steps": 100000, "eval_fraction": 0.0, "gradient_accumulation_steps": 1}


def export_tokenizer(out: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from wizardcoder.embedded import embedded_gguf_path

    gguf = embedded_gguf_path()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


def build_model(tokenizer_dir: Path, size: str, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    config = AutoConfig.from_pretrained(tokenizer_dir)
    for key, value in SIZES[size].items():
        setattr(config, key, value)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    total = sum(p.numel() for p in model.parameters())
    print(f"{size}: {total / 1e6:.0f}M parameters -> {out}", flush=True)
    return out


def run_case(work: Path, model: Path, data: Path, size: str, case: str, batch: int,
             steps: int, timeout: int) -> dict:
    params = {**BASE_PARAMS, "base_model": str(model), "per_device_train_batch_size": batch,
              "max_steps": steps, **CASES[case]}
    case_dir = work / f"{size}-{case}"
    case_dir.mkdir(parents=True, exist_ok=True)
    params_path = case_dir / "params.yaml"
    params_path.write_text(yaml.safe_dump({"train": params}), encoding="utf-8")
    metrics = case_dir / "metrics.json"
    cmd = [sys.executable, "-m", "stages.train", "--params", str(params_path),
           "--data", str(data), "--out", str(case_dir / "model"), "--metrics", str(metrics),
           "--plots", str(case_dir / "curve.json")]
    env = {**os.environ, "WIZARDCODER_MLFLOW": "0",
           "WIZARDCODER_CACHE_DIR": str(case_dir / "cache")}
    start = time.perf_counter()
    with open(case_dir / "log.txt", "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not metrics.is_file():
        tail = (case_dir / "log.txt").read_text(errors="replace")[-3000:]
        return {"error": f"exit {proc.returncode}", "log_tail": tail, "wall_s": wall}
    return {**json.loads(metrics.read_text()), "wall_s": round(wall, 1), "batch": batch}


def kill_resume(work: Path, model: Path, data: Path, size: str, case: str, batch: int,
                steps: int, timeout: int) -> dict:
    """Kill the case's stage after its first complete checkpoint, resume, compare with the
    case's uninterrupted run (same params but save_steps, which does not change a run)."""
    import torch
    from safetensors.torch import load_file

    from wizardcoder.train.checkpoints import is_complete

    clean_dir = work / f"{size}-{case}"
    params = {**BASE_PARAMS, "base_model": str(model), "per_device_train_batch_size": batch,
              "max_steps": steps, "save_steps": max(2, steps // 4), **CASES[case]}
    case_dir = work / f"{size}-{case}-killed"
    cache = case_dir / "cache"
    case_dir.mkdir(parents=True, exist_ok=True)
    params_path = case_dir / "params.yaml"
    params_path.write_text(yaml.safe_dump({"train": params}), encoding="utf-8")
    cmd = [sys.executable, "-m", "stages.train", "--params", str(params_path),
           "--data", str(data), "--out", str(case_dir / "model"),
           "--metrics", str(case_dir / "metrics.json"), "--plots", str(case_dir / "curve.json")]
    env = {**os.environ, "WIZARDCODER_MLFLOW": "0", "WIZARDCODER_CACHE_DIR": str(cache)}
    with open(case_dir / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if any(is_complete(p, 1) for p in cache.glob("train-checkpoints/*/checkpoint-*")):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            return {"error": f"not killed after a checkpoint (exit {proc.returncode})"}
        resumed = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 timeout=timeout, check=False)
    if resumed.returncode != 0:
        return {"error": f"resume exit {resumed.returncode}"}
    a = json.loads((clean_dir / "curve.json").read_text())
    b = json.loads((case_dir / "curve.json").read_text())
    loss_diff = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True))
    wa = load_file(str(clean_dir / "model" / "model.safetensors"))
    wb = load_file(str(case_dir / "model" / "model.safetensors"))
    weight_diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    resumed_from = json.loads((case_dir / "metrics.json").read_text())["resumed_from_step"]
    return {"resumed_from_step": resumed_from, "max_loss_diff": loss_diff,
            "max_weight_diff": weight_diff, "same_weights": all(torch.equal(wa[k], wb[k])
                                                                for k in wa)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-tokenizer", type=Path, help="write tokenizer+config, exit")
    parser.add_argument("--tokenizer", type=Path, help="dir from --export-tokenizer")
    parser.add_argument("--data", type=Path, help="instruction/input/output JSONL")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--cases", default="padding,packing,zero2,zero3,zero2-launcher",
                        help=f"comma-separated, from {', '.join(CASES)}")
    parser.add_argument("--batch", nargs="+", default=["135m=16", "1b=8"],
                        help="per-device rows per step, per size (SIZE=N)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/wizardcoder-train-gpu"))
    parser.add_argument("--timeout", type=int, default=400, help="seconds per case")
    parser.add_argument("--out", type=Path, help="write all results here as JSON")
    parser.add_argument("--kill-resume", metavar="CASE",
                        help="after the cases, kill and resume this case (one of --cases)")
    args = parser.parse_args()
    if args.export_tokenizer:
        export_tokenizer(args.export_tokenizer)
        return
    if not (args.tokenizer and args.data):
        parser.error("--tokenizer and --data are needed (or --export-tokenizer)")
    batches = dict(item.split("=") for item in args.batch)
    if args.kill_resume and args.kill_resume not in args.cases.split(","):
        parser.error("--kill-resume needs its case in --cases (the uninterrupted run)")
    results: dict[str, dict] = {}
    for size in args.sizes:
        model = build_model(args.tokenizer, size, args.work / f"model-{size}")
        for case in args.cases.split(","):
            key = f"{size}/{case}"
            results[key] = run_case(args.work, model, args.data, size, case,
                                    int(batches[size]), args.steps, args.timeout)
            print_row(key, results[key], results)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
        if args.kill_resume:
            key = f"{size}/{args.kill_resume}/kill-resume"
            results[key] = kill_resume(args.work, model, args.data, size, args.kill_resume,
                                       int(batches[size]), args.steps, args.timeout)
            print(f"{key:30s} {json.dumps(results[key])}", flush=True)
            if args.out:
                args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")


def print_row(key: str, row: dict, results: dict) -> None:
    if "error" in row:
        print(f"{key:22s} FAILED {row['error']}\n{row['log_tail']}", flush=True)
        return
    size = key.split("/")[0]
    base = next(r for k, r in results.items() if k.startswith(size + "/") and "error" not in r)
    rate, base_rate = row.get("steady_tokens_per_s") or 0, base.get("steady_tokens_per_s") or 1
    print(f"{key:22s} {rate:10.0f} tokens/s  {rate / base_rate:5.2f}x  "
          f"{row.get('model_tflops_per_s', 0):7.1f} TFLOP/s  MFU {row.get('mfu', 0):6.1%}  "
          f"peak {row.get('peak_gpu_memory_gib', 0):5.1f} GiB  {row.get('seconds_per_step')} s/step"
          f"  {row['global_step']} steps  loss {row['train_loss']:.3f}  wall {row['wall_s']} s  "
          f"params {row['total_parameters'] / 1e6:.0f}M  {row['precision']}", flush=True)


if __name__ == "__main__":
    main()
