"""Batched vs one-prompt-at-a-time generation with the HF backend on CPU.

    python bench/generate.py                       # 32 HumanEval prompts, 128 new tokens
    python bench/generate.py --threads 2 1 --batch-sizes 1 16 32 --prompts 32 --max-new-tokens 128
    python bench/generate.py --device cuda --dtype bfloat16 --model DIR --threads 1 \
        --batch-sizes 1 16 64 --prompts 64 --max-new-tokens 256       # on a GPU

The bundled SmolLM2-135M (``model: embedded``, the GGUF dequantized to fp32 by transformers),
greedy decoding, the instruction prompt format of the pipeline, through
``wizardcoder.generate.hf.HFBackend``. For each torch thread count, every batch size generates
for the same prompts; printed: new tokens kept per second (EOS included, padding not), seconds,
the ratio to batch size 1 in the same process, and how many completions equal batch 1's (greedy:
they should all, up to float rounding in padded batches). Stop strings and the stop after a
closed code block are off by default (``--stops`` turns the pipeline's on), so every row runs to
``--max-new-tokens`` or EOS and the token counts compare. ``--split`` also times the prompt
pass alone, which batching cannot speed up on CPU (it is compute-bound either way), and reports
the decoding rate without it. ``--repeats N`` interleaves N rounds and keeps the fastest of each
configuration (a shared machine's load drifts). Goal: batch 32 (the pipeline's
``generate.batch_size``) >= 5x batch 1. About 10 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--stops", action="store_true",
                        help="the pipeline's stop strings and stop_after_code_block")
    parser.add_argument("--repeats", type=int, default=1,
                        help="interleaved rounds; the fastest of each is kept")
    parser.add_argument("--model", default="embedded",
                        help="'embedded' (the bundled GGUF), a model directory or a .gguf file")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    parser.add_argument("--split", action="store_true",
                        help="also time the prompt pass alone (max_new_tokens 1) and report "
                             "the decoding rate without it")
    args = parser.parse_args()

    import torch

    from wizardcoder.generate import GenerateConfig, load_benchmark, prompt_text
    from wizardcoder.generate.hf import HFBackend, load_model

    problems = load_benchmark("humaneval", limit=args.prompts)
    prompts = [prompt_text(p, "instruction") for p in problems.values()]
    start = time.perf_counter()
    model, tokenizer = load_model(args.model, args.device, args.dtype)
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"model: {args.model} {args.dtype} on {where}, loaded in "
          f"{time.perf_counter() - start:.1f} s; "
          f"{len(prompts)} prompts of {min(lengths)}-{max(lengths)} tokens, "
          f"max_new_tokens {args.max_new_tokens}, greedy, stops {'on' if args.stops else 'off'}"
          f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    extra = {} if args.stops else {"stop": [], "stop_after_code_block": False}

    def run(threads: int, batch_size: int, max_new_tokens: int):
        config = GenerateConfig(max_new_tokens=max_new_tokens, batch_size=batch_size,
                                threads=threads, **extra)
        backend = HFBackend(config, args.model, model=model, tokenizer=tokenizer)
        outputs = backend.generate(prompts, 1)
        if args.device == "cuda":
            torch.cuda.synchronize()
        return backend.stats, outputs

    for threads in args.threads:
        torch.set_num_threads(threads)
        run(threads, 2, 2)  # warm-up, not counted
        best: dict[int, tuple] = {}
        for _ in range(args.repeats):  # interleaved: a shared machine's load drifts
            for batch_size in args.batch_sizes:
                stats, outputs = run(threads, batch_size, args.max_new_tokens)
                if batch_size not in best or stats.seconds < best[batch_size][0].seconds:
                    best[batch_size] = stats, outputs
        base_stats, reference = best[args.batch_sizes[0]]
        base_rate = base_stats.new_tokens / base_stats.seconds
        for batch_size in args.batch_sizes:
            stats, outputs = best[batch_size]
            rate = stats.new_tokens / stats.seconds
            same = sum(a == b for a, b in zip(outputs, reference, strict=True))
            line = (f"threads {threads}  batch {batch_size:3d}: {stats.new_tokens:5d} tokens in "
                    f"{stats.seconds:7.2f} s = {rate:7.1f} tokens/s   {rate / base_rate:5.2f}x "
                    f"batch {args.batch_sizes[0]}   same completions {same}/{len(prompts)}")
            if args.split:  # the prompt pass (and first token) alone: what batching cannot hide
                prefill, _ = run(threads, batch_size, 1)
                decode_s = max(1e-9, stats.seconds - prefill.seconds)
                line += (f"   prompt pass {prefill.seconds:6.2f} s, decoding "
                         f"{(stats.new_tokens - prefill.new_tokens) / decode_s:7.1f} tokens/s")
            print(line, flush=True)

if __name__ == "__main__":
    main()
