"""Make the MultiPL-E completions that bench/multipl_e_fidelity.py scores: the bundled SmolLM2
continues each prompt (base-model style, MultiPL-E's stop tokens), so the set holds what a
weak model writes: programs that pass, fail, do not compile, loop.

    python bench/multipl_e_samples.py --tasks 5 --samples 1 --max-tokens 96 \
        --out bench/data/multipl_e_smollm2.jsonl.gz

Every 8th task of each language (HumanEval_0, _8, ...), seeded: rerunning gives the same file
on the same llama-cpp-python build.
"""

from __future__ import annotations

import argparse
import gzip
import json

from wizardcoder.benchmarks.multipl_e import LANGUAGES, cut_at_stop, load_problems
from wizardcoder.embedded import embedded_gguf_path

DEFAULT_LANGUAGES = ("cpp", "java", "js", "ts", "php", "rs", "go", "sh", "lua", "rb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--languages", default=",".join(DEFAULT_LANGUAGES))
    parser.add_argument("--tasks", type=int, default=5, help="tasks per language")
    parser.add_argument("--samples", type=int, default=1, help="completions per task")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--out", default="bench/data/multipl_e_smollm2.jsonl.gz")
    args = parser.parse_args()
    from llama_cpp import Llama

    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=2048, n_threads=1, seed=0,
                verbose=False)
    rows = []
    for language in args.languages.split(","):  # written after each language: usable if cut
        assert language in LANGUAGES, language
        problems = list(load_problems(language).values())[::8][:args.tasks]
        for problem in problems:
            for sample in range(args.samples):
                out = llm.create_completion(problem["prompt"], max_tokens=args.max_tokens,
                                            temperature=0.8, top_p=0.95, seed=sample,
                                            stop=problem["stop"])
                rows.append({"language": language, "task_id": problem["task_id"],
                             "completion": cut_at_stop(out["choices"][0]["text"],
                                                       problem["stop"]),
                             "source": "SmolLM2-135M-Instruct (bundled), T=0.8"})
        print(language, len(rows), flush=True)
        with gzip.GzipFile(args.out, "wb", mtime=0) as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in rows).encode())


if __name__ == "__main__":
    main()
