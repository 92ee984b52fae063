"""Training throughput: padding vs packing, and ZeRO stage 0 / 2 / 3 (DeepSpeed).

    python bench/train.py                     # bundled seeds, random-init 4-layer Llama
    python bench/train.py --data /work/shared/data/code_alpaca_2k.json
    python bench/train.py --data data/merged/train.jsonl --only-data   # the evolved set
    python bench/train.py --data data/merged/train.jsonl --model embedded --cases ''

A benchmark, not a test: it prints figures and ratios against baselines measured in the
same run (3 to 6 minutes on 2 shared cores with the defaults). Two parts:

1. Padding vs packing, interleaved in this process: one training step of each mode in turn
   (same model, optimizer and code as run_training: encode_rows, pack_dataset and the two
   collators), ``--ab-steps`` timed steps each after a warm-up step. Modes: padding (dynamic
   padding to the longest example of each micro-batch, the default), packing
   (``train.packing``: rows of up to max_length, ``--batch`` packed rows per step) and
   packing-eq (packing with fewer rows, about as many real tokens per step as padding).
   Interleaving matters on a shared machine: its load moves throughput far more than the
   modes differ, and each mode sees the same load.
2. ``run_training`` cases, each in its own subprocess (per-case peak memory; DeepSpeed's
   process-wide state cannot leak): padding, packing, packing-eq, zero2 and zero3
   (``configs/deepspeed/zero2.json`` / ``zero3.json``, one process, gloo on a CPU; padding
   mode). padding is also ZeRO-0, the plain Trainer. The subprocesses take turns step by
   step (each blocks before a step until the parent lets it go), so they are interleaved
   too. ``--steps`` timed steps after a warm-up step.

tokens/s counts real tokens only (no padding). Peak memory: the subprocess's peak RSS
(VmHWM) and its growth over the RSS at the start of training; on a GPU
``torch.cuda.max_memory_allocated`` too. Data: the 72 bundled seeds, plus ``--data`` (a
Code Alpaca JSON array or any instruction/input/output JSONL, e.g. the merged evolved set).
``--model random`` (default) is a random-init Llama of ``--layers`` x ``--hidden`` with the
embedded SmolLM2 tokenizer (49k vocabulary); ``--model embedded`` is the real SmolLM2-135M.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wizardcoder.seed.config import SeedConfig  # noqa: E402
from wizardcoder.seed.seeds import load_seeds  # noqa: E402

DEEPSPEED = {"zero2": "configs/deepspeed/zero2.json", "zero3": "configs/deepspeed/zero3.json"}
STEP_DONE = "BENCH-STEP-DONE"
RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# --- setup (parent) -----------------------------------------------------------------------

def write_rows(work: Path, data: str | None, only_data: bool = False) -> tuple[Path, int]:
    rows = [] if only_data and data else load_seeds(SeedConfig(limit=0))[0]
    if data:
        extra, _ = load_seeds(SeedConfig(source="file", path=data, limit=0))
        rows += extra
    rows = [r for r in rows if r["output"].strip()]
    path = work / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, len(rows)


def random_model(work: Path, layers: int, hidden: int) -> Path:
    """A random-init Llama with the embedded GGUF's tokenizer (no download)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from wizardcoder.embedded import embedded_gguf_path

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = work / "model"
    tokenizer.save_pretrained(out)
    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 8 // 3,
        num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


# --- padding vs packing, interleaved in this process ------------------------------------------

def ab_packing(model_src: str, data: Path, max_length: int, batches: dict[str, int],
               steps: int) -> dict[str, dict]:
    """Alternate one training step of each mode, ``steps`` times; the first is excluded.

    The same model, optimizer, data and code (encode_rows, pack_dataset, the two collators)
    as run_training; interleaving step by step makes every mode see the same machine load,
    which on a shared CPU moves much more than the modes differ. Cost does not depend on
    the weights, so one model and optimizer serve all modes.
    """
    import random

    import torch

    from wizardcoder.train import TrainConfig
    from wizardcoder.train.data import (
        SupervisedCollator,
        encode_rows,
        ensure_pad_token,
        load_rows,
    )
    from wizardcoder.train.model import load_base_model
    from wizardcoder.train.packing import (
        REAL_TOKENS_KEY,
        PackedCollator,
        pack_dataset,
        uses_flash_attention,
    )

    cuda = torch.cuda.is_available()
    config = TrainConfig(base_model=model_src, max_length=max_length,
                         gradient_checkpointing=False)
    model, tokenizer = load_base_model(config, "bf16" if cuda else "fp32")
    ensure_pad_token(tokenizer, model)
    model.to("cuda" if cuda else "cpu").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    encoded = encode_rows(tokenizer, load_rows(data), max_length, data)
    packed = pack_dataset(encoded, max_length)
    pad_collate = SupervisedCollator(tokenizer.pad_token_id)
    pack_collate = PackedCollator(tokenizer.pad_token_id, flatten=uses_flash_attention(model))

    def batch_stream(examples, size, collate):
        rng, order = random.Random(0), []
        while True:
            if len(order) < size:
                more = list(range(len(examples)))
                rng.shuffle(more)
                order += more
            chosen, order[:size] = order[:size], []
            yield collate([examples[i] for i in chosen])

    streams = {name: batch_stream(encoded.examples if name == "padding" else packed.examples,
                                  size, pad_collate if name == "padding" else pack_collate)
               for name, size in batches.items()}
    totals = {name: {"tokens": 0, "positions": 0, "seconds": 0.0, "rates": []}
              for name in batches}
    for step in range(steps):
        for name, stream in streams.items():
            batch = next(stream)
            real = batch.pop(REAL_TOKENS_KEY).sum() if REAL_TOKENS_KEY in batch \
                else batch["attention_mask"].sum()
            batch = {k: v.to(model.device) for k, v in batch.items()}
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if step > 0:  # warm-up step excluded
                t = totals[name]
                t["tokens"] += int(real)
                t["positions"] += batch["input_ids"].numel()
                t["seconds"] += time.perf_counter() - start
                t["rates"].append(int(real) / (time.perf_counter() - start))
    for t in totals.values():
        t["tokens_per_s"] = t["tokens"] / t["seconds"]
        t["positions_per_s"] = t["positions"] / t["seconds"]
        t["real_fraction"] = t["tokens"] / t["positions"]
    return totals


def print_ab(totals: dict[str, dict], batches: dict[str, int]) -> None:
    base = totals["padding"]
    print(f"\n{'mode (interleaved)':<19} {'batch':>5} {'tokens/s':>9} {'ratio':>6} {'paired':>7} "
          f"{'positions/s':>12} {'real/positions':>15}")
    for name, t in totals.items():
        print(f"{name:<19} {batches[name]:>5} {t['tokens_per_s']:>9.0f} "
              f"{t['tokens_per_s'] / base['tokens_per_s']:>5.2f}x "
              f"{paired_ratio(t['rates'], base['rates']):>6.2f}x {t['positions_per_s']:>12.0f} "
              f"{t['real_fraction']:>15.1%}")
    print("ratio = (positions/s ratio) x (real/positions ratio): what packing removes is the "
          "padding; the\nrest is the cost per position of longer rows and bigger tensors. "
          "paired: median over rounds of\nthe step-rate ratio to the padding step of the same "
          "round (robust to load that drifts).")


def paired_ratio(rates: list[float], base: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(rates, base, strict=True))


# --- one run_training case (child process) ---------------------------------------------------

def worker(spec: dict) -> dict:
    """run_training for ``spec``; per-step real tokens and seconds (step 1 excluded)."""
    import psutil
    import torch
    from transformers import TrainerCallback

    from wizardcoder.train import TrainConfig, run_training

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.steps: list[tuple[int, float, float]] = []
            self.rss_start = psutil.Process().memory_info().rss
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            sys.stdin.readline()  # wait for this case's turn (see run_cases)
            self.t, self.cpu = time.perf_counter(), time.process_time()
            self.tokens = state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step > 1:  # warm-up step excluded
                self.steps.append((state.num_input_tokens_seen - self.tokens,
                                   time.perf_counter() - self.t, time.process_time() - self.cpu))
            print(STEP_DONE, flush=True)

        def on_train_end(self, args, state, control, **kwargs):
            sys.stdin.readline()  # save only once every case has finished its steps

    clock = Clock()
    config = TrainConfig(**spec["config"])
    work = Path(spec["work"])
    metrics = run_training(config, spec["data"], work / "out", work / "metrics.json",
                           work / "plots.json", callbacks=[clock])
    peak = peak_rss()
    return {
        "steps": clock.steps,
        "peak_rss_mib": peak / 2**20,
        "rss_growth_mib": (peak - clock.rss_start) / 2**20,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available() else None,
        "examples_per_row": metrics.get("packing_examples_per_row", 1.0),
    }


def peak_rss() -> int:
    """Peak RSS of this process in bytes: VmHWM (ru_maxrss would include the RSS of the
    parent at fork time, which Linux carries across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_cases(cases: dict[str, dict], base: dict, work: Path, data: Path,
              steps: int) -> dict[str, dict]:
    """Start one run_training subprocess per case and let them take turns, step by step.

    Every worker blocks before each optimizer step until told to go, and reports when the
    step is done; the parent lets one case step at a time, round-robin. So the cases are
    interleaved like the in-process table, see the same machine load, and never compete
    with each other (model loading and saving happen outside the timed steps).
    """
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    env.setdefault("WIZARDCODER_MLFLOW", "0")
    procs, logs = {}, []
    for name, overrides in cases.items():
        case_dir = work / name
        case_dir.mkdir()
        spec = {"config": {**base, **overrides}, "work": str(case_dir), "data": str(data)}
        env["WIZARDCODER_CACHE_DIR"] = str(case_dir / "cache")  # never resume old checkpoints
        logs.append(open(case_dir / "stderr.txt", "w"))
        procs[name] = subprocess.Popen(
            [sys.executable, __file__, "--worker", json.dumps(spec)], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logs[-1], text=True)
    try:
        for _ in range(steps):
            for name, proc in procs.items():
                proc.stdin.write("go\n")
                proc.stdin.flush()
                while (line := proc.stdout.readline()) and line.strip() != STEP_DONE:
                    pass
                if not line:
                    raise SystemExit(f"case {name} failed:\n"
                                     f"{(work / name / 'stderr.txt').read_text()[-3000:]}")
        results = {}
        for name, proc in procs.items():
            out, _ = proc.communicate("go\n")
            if proc.returncode != 0:
                raise SystemExit(f"case {name} failed:\n"
                                 f"{(work / name / 'stderr.txt').read_text()[-3000:]}")
            results[name] = summarize(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for handle in logs:
            handle.close()


def summarize(result: dict) -> dict:
    tokens = sum(n for n, _, _ in result["steps"])
    result["tokens_per_s"] = tokens / sum(t for _, t, _ in result["steps"])
    result["tokens_per_cpu_s"] = tokens / sum(c for _, _, c in result["steps"])
    return result


def padding_stats(data: Path, model: str, max_length: int,
                  batch: int) -> tuple[float, float, float]:
    """(fraction of positions that are padding when batches of ``batch`` random examples are
    padded to their longest, mean example tokens, packed row density)."""
    import random

    from wizardcoder.train import TrainConfig
    from wizardcoder.train.data import encode_rows, ensure_pad_token, load_rows
    from wizardcoder.train.model import load_tokenizer
    from wizardcoder.train.packing import best_fit_decreasing

    tokenizer = load_tokenizer(TrainConfig(base_model=model))
    ensure_pad_token(tokenizer)
    lengths = [len(e["input_ids"]) for e in
               encode_rows(tokenizer, load_rows(data), max_length, data).examples]
    random.Random(0).shuffle(lengths)
    real = padded = 0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        real += sum(chunk)
        padded += max(chunk) * len(chunk)
    density = real / (len(best_fit_decreasing(lengths, max_length)) * max_length)
    return 1 - real / padded, real / len(lengths), density


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="extra rows: Code Alpaca JSON array or JSONL")
    parser.add_argument("--only-data", action="store_true",
                        help="train on the --data rows alone (e.g. the merged evolved set, "
                             "which already holds the seeds)")
    parser.add_argument("--model", default="random", help="random | embedded | a model dir")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="per_device_train_batch_size")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--ab-steps", type=int, default=8,
                        help="interleaved steps per mode (0 skips the padding/packing A/B)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per case")
    parser.add_argument("--cases", default="padding,packing,packing-eq,zero2,zero3",
                        help="run_training cases ('' skips them)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        data, n_rows = write_rows(work, args.data, args.only_data)
        model = str(random_model(work, args.layers, args.hidden)) if args.model == "random" \
            else args.model
        pad_fraction, mean_len, density = padding_stats(data, model, args.max_length,
                                                        args.batch)
        # packing-eq: fewer packed rows, about as many real tokens per step as padding
        eq_batch = max(1, round(args.batch * mean_len / (density * args.max_length)))
        described = (f"random Llama {args.layers} layers x {args.hidden}"
                     if args.model == "random" else args.model)
        print(f"{described}; {n_rows} rows (mean {mean_len:.0f} tokens, max_length "
              f"{args.max_length}); batch {args.batch}; padding each batch to its longest "
              f"example wastes {pad_fraction:.0%} of positions (best possible packing gain "
              f"{density / (1 - pad_fraction):.2f}x); packed rows are {density:.0%} full",
              flush=True)
        if args.ab_steps:
            batches = {"padding": args.batch, "packing": args.batch, "packing-eq": eq_batch}
            print_ab(ab_packing(model, data, args.max_length, batches, args.ab_steps + 1),
                     batches)
        cases = [c for c in args.cases.split(",") if c]
        if not cases:
            return
        base = dict(base_model=model, max_length=args.max_length, max_steps=args.steps + 1,
                    per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                    gradient_checkpointing=False, learning_rate=1e-4, warmup_steps=0,
                    logging_steps=1, save_steps=10**6, seed=0)
        overrides = {}
        for name in cases:
            overrides[name] = {"packing": True} if name.startswith("packing") else {}
            if name == "packing-eq":
                overrides[name]["per_device_train_batch_size"] = eq_batch
            if name in DEEPSPEED:
                overrides[name]["deepspeed"] = str(ROOT / DEEPSPEED[name])
        print_table(run_cases(overrides, base, work, data, args.steps + 1))


def print_table(results: dict[str, dict]) -> None:
    baseline = results.get("padding")
    print(f"\n{'run_training':<12} {'tokens/s':>9} {'ratio':>6} {'paired':>7} "
          f"{'tokens/CPU-s':>13} {'ratio':>6} {'ex/row':>7} {'peak RSS MiB':>13} "
          f"{'RSS growth':>11} {'CUDA MiB':>9}")
    for name, r in results.items():
        ratio = r["tokens_per_s"] / baseline["tokens_per_s"] if baseline else float("nan")
        cuda = f"{r['cuda_peak_mib']:.0f}" if r["cuda_peak_mib"] is not None else "-"
        cpu_ratio = r["tokens_per_cpu_s"] / baseline["tokens_per_cpu_s"] if baseline \
            else float("nan")
        paired = paired_ratio([n / t for n, t, _ in r["steps"]],
                              [n / t for n, t, _ in baseline["steps"]]) if baseline \
            else float("nan")
        print(f"{name:<12} {r['tokens_per_s']:>9.0f} {ratio:>5.2f}x {paired:>6.2f}x "
              f"{r['tokens_per_cpu_s']:>13.0f} "
              f"{cpu_ratio:>5.2f}x {r['examples_per_row']:>7.2f} "
              f"{r['peak_rss_mib']:>13.0f} {r['rss_growth_mib']:>11.0f} {cuda:>9}")
    print("one process per case, taking turns step by step; ratios against padding (= ZeRO-0, "
          "the plain Trainer);\npaired: median over rounds of the step-rate ratio to the "
          "padding step of the same round")
    if baseline:
        same = [name for name in results if name in DEEPSPEED and
                [n for n, _, _ in results[name]["steps"]] == [n for n, _, _ in baseline["steps"]]]
        if same:
            print(f"{', '.join(same)}: the same real tokens at every step as padding (same "
                  "batches)")


if __name__ == "__main__":
    main()
