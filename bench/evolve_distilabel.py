"""distilabel's EvolInstruct on the same seeds and latency server as bench/evolve.py.

Run by ``bench/evolve.py --distilabel-python /tmp/distilabel-venv/bin/python`` (distilabel
lives in its own venv: ``python -m venv /tmp/distilabel-venv &&
/tmp/distilabel-venv/bin/pip install distilabel openai requests -c constraints.txt``;
distilabel 1.5.3 imports requests without declaring it); by hand:

    /tmp/distilabel-venv/bin/python bench/evolve_distilabel.py --base-url URL \
        --seeds seeds.jsonl --batch-size 32

One evolution per seed plus its answer (``num_evolutions=1, generate_answers=True``), the
task used on its own (``load()`` + ``process()`` per batch of ``--batch-size`` rows: distilabel
sends a batch's requests concurrently), so the figure is its LLM-calling engine without the
multiprocessing Pipeline start-up. Prints one JSON line: wall seconds and rows.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--seeds", required=True, help="JSONL with an 'instruction' per row")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()

    import distilabel
    from distilabel.models import OpenAILLM
    from distilabel.steps.tasks import EvolInstruct

    rows = [{"instruction": json.loads(line)["instruction"]}
            for line in open(args.seeds, encoding="utf-8") if line.strip()]
    start = time.perf_counter()
    llm = OpenAILLM(model="latency-model", base_url=args.base_url, api_key="bench-dummy",
                    max_retries=0, timeout=60,
                    generation_kwargs={"max_new_tokens": args.max_tokens, "temperature": 0.7})
    task = EvolInstruct(llm=llm, num_evolutions=1, generate_answers=True, seed=0,
                        input_batch_size=args.batch_size)
    task.load()
    loaded = time.perf_counter()
    out = []
    for i in range(0, len(rows), args.batch_size):
        for batch in task.process(rows[i:i + args.batch_size]):
            out.extend(batch)
    done = time.perf_counter()
    answered = sum(bool(r.get("answer")) for r in out)
    print(json.dumps({"distilabel": distilabel.__version__, "rows": len(out),
                      "answered": answered, "wall_s": round(done - start, 3),
                      "load_s": round(loaded - start, 3)}))


if __name__ == "__main__":
    main()
