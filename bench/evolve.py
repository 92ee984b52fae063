"""LLM client throughput and one evolution round against a fixed-latency local server.

    python bench/evolve.py                        # about a minute on 2 cores
    python bench/evolve.py --distilabel-python /tmp/distilabel-venv/bin/python

A benchmark, not a test: it prints figures and ratios measured in this process, against
baselines measured in the same process. A fixed-latency OpenAI-compatible server (aiohttp, this
script in its own process, so it never competes for this process's GIL) answers every chat
request after ``--latency`` seconds (200 ms) with a short deterministic answer that fits
this project's evolve / answer / judge prompts and distilabel's. First a raw aiohttp
burst checks that the server really holds 256 requests at once; then:

1. ``LLMClient.chat_many`` at 1, 8, 32 and 128 requests in flight, each level with a fresh
   request cache so every call reaches the server, beside the ideal rate (in flight /
   latency), the ratio, the openai SDK's AsyncOpenAI at the same concurrency, and a
   sequential baseline (plain one-at-a-time ``openai.OpenAI`` calls). Goal: >= 0.9x ideal at
   32 in flight.
2. One evolve round (``evolve_round``) over the 72 bundled seeds at 32 in flight, with and
   without the judge step, wall time and server-side call counts; with
   ``--distilabel-python``, distilabel's EvolInstruct (one evolution + answer per seed, batches
   of 32) on the same seeds and server, run by ``bench/evolve_distilabel.py`` in that venv.
3. ``--realistic``: 2,000 Code Alpaca-style seeds x 3 rounds against a second server with
   realistic faults: about 1% of prompts get a permanent 400 context_length_exceeded, 429
   bursts with Retry-After (every ``--burst-every`` s for ``--burst-len`` s), log-normal
   latency around ``--latency``; its judge says Equal for ~10% of rows and its answers
   refuse for ~3%. Per round: wall time, server responses by status, calls, answers not
   bought thanks to the judge-first order, rows eliminated per verdict and request-error
   class. The rounds must finish (``evolve.max_failed_fraction`` 0.05: with 3 calls per row,
   1% of calls failing eliminates ~3% of rows). Seeds: ``--alpaca
   /work/shared/data/code_alpaca_2k.json`` when given and present, else 2,000 synthetic
   Code Alpaca-style rows.

    python bench/evolve.py --realistic [--alpaca /work/shared/data/code_alpaca_2k.json]

4. ``--batch``: ``llm.mode: batch`` at scale, unattended: 20,000 synthetic seeds x 3 rounds
   against the tests' Batch API server (``tests/fake_openai.py`` ``BatchServer``, in its own
   process) with the faults batch mode must survive: ~5% of requests fail transiently the
   first time (a 500 line in the error file; online a 500), 1% of prompts get a permanent
   400 context_length_exceeded, every batch expires after ``--expire-after`` lines (the rest
   never run), output files are shuffled, batches queue ``--queue-s`` before they run, the
   first creates' answers are lost while the organisation creates 1,100 other batches each
   time, and the files/batches API is down (503) for ``--outage-s`` every 20 s. Then the
   same rounds online (same faults per prompt) against a fresh server. Prints, per mode,
   wall time, batches and follow-ups, rows kept and dropped, and: the rows are the same in
   both modes, and no request was paid twice (each custom_id answered 200 at most once).

    python bench/evolve.py --batch --in-flight 128 [--seeds 20000 --rounds 3]

   Measured on 2 shared cores (after ff03a22): batch 129 s (2,227 batches listed, 9 of
   them expired, 28 created by the client incl. follow-ups, 49 calls answered 503 and
   waited out, 169,099 lines paid, 0 paid twice); online 204 s (179,347 requests); the same
   rows in all 3 rounds (16,155 evolved rows in r3, 2,031 dropped for permanent failures);
   5 min 37 s in all.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wizardcoder.config import from_dict  # noqa: E402
from wizardcoder.evolve.config import EvolveConfig  # noqa: E402
from wizardcoder.evolve.engine import evolve_round  # noqa: E402
from wizardcoder.llm import ChatRequest, LLMClient, LLMConfig, RequestCache  # noqa: E402
from wizardcoder.seed.config import SeedConfig  # noqa: E402
from wizardcoder.seed.seeds import load_seeds  # noqa: E402

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- the latency server (run as `python bench/evolve.py --serve ...` in its own process) --

JUDGE_MARK = "Answer with exactly one of: Equal, Not Equal."
EVOLVE_MARK = "Rewrite the programming question below"


def completion_text(messages: list[dict], realistic: bool = False) -> str:
    """A plausible answer for this project's prompts, and for distilabel's. ``realistic``:
    the judge says Equal for ~10% of rows, ~3% of answers are refusals and answers are ~200
    tokens of code."""
    prompt = str(messages[-1].get("content", ""))
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    if JUDGE_MARK in prompt:
        return "Equal" if realistic and _share(prompt, "judge") < 0.10 else "Not Equal"
    if realistic and EVOLVE_MARK not in prompt and _share(prompt, "refuse") < 0.03:
        return "I'm sorry, but I cannot help with that request."
    if EVOLVE_MARK in prompt or "#Rewritten Prompt#" in prompt or "#Created Prompt#" in prompt:
        question = prompt.rsplit("\n", 1)[-1][:200]
        return (f"{question} Additionally, the function must reject invalid input with a "
                f"ValueError and run in linear time (variant {digest}).")
    if realistic:  # an answer of a realistic length (~200 tokens), the expensive call
        return (f"def solve(data):\n    \"\"\"Solution {digest}.\"\"\"\n"
                + "".join(f"    step_{i} = [x for x in data if x % {i + 2}]  # filter pass {i}\n"
                          for i in range(16)) + "    return sorted(data)\n")
    return f"def solve(data):\n    # solution {digest}\n    return sorted(data)\n"


def _share(prompt: str, salt: str) -> float:
    """A stable number in [0, 1) per prompt: a fault hits the same prompts on every run."""
    digest = hashlib.sha256(f"{salt}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


class Faults:
    """Realistic trouble for ``--realistic``: permanent 400s, 429 bursts, latency spread."""

    def __init__(self, rate_400: float, burst_every: float, burst_len: float,
                 retry_after: float, sigma: float):
        self.rate_400, self.burst_every, self.burst_len = rate_400, burst_every, burst_len
        self.retry_after, self.sigma = retry_after, sigma
        self.start = time.monotonic()
        self.rng = random.Random(0)

    def latency(self, median: float) -> float:
        return median * self.rng.lognormvariate(0.0, self.sigma) if self.sigma else median

    def in_burst(self) -> bool:
        if not self.burst_every:
            return False
        return (time.monotonic() - self.start) % self.burst_every < self.burst_len


CONTEXT_400 = {"error": {"message": "This model's maximum context length is 8192 tokens. "
                         "However, your messages resulted in 9120 tokens. Please reduce the "
                         "length of the messages.", "type": "invalid_request_error",
                         "param": "messages", "code": "context_length_exceeded"}}


class Server:
    def __init__(self, latency: float, faults: Faults | None = None):
        self.latency = latency
        self.faults = faults
        self.requests = 0
        self.in_flight = 0
        self.peak = 0
        self.statuses: dict[str, int] = {}

    def _count(self, status: int) -> None:
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        faults = self.faults
        prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
        if faults is not None and faults.in_burst():
            self._count(429)
            return web.json_response(
                {"error": {"message": "Rate limit reached for requests", "type": "requests",
                           "code": "rate_limit_exceeded"}},
                status=429, headers={"Retry-After": f"{faults.retry_after:g}"})
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(faults.latency(self.latency) if faults else self.latency)
        finally:
            self.in_flight -= 1
        if faults is not None and _share(prompt, "400") < faults.rate_400:
            self._count(400)
            return web.json_response(CONTEXT_400, status=400)
        self._count(200)
        text = completion_text(body.get("messages") or [{}], faults is not None)
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4 + 1
        completion_tokens = len(text) // 4 + 1
        return web.json_response({
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "latency-model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}})

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "latency-model", "object": "model", "owned_by": "bench"}]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "peak_in_flight": self.peak,
                                  "statuses": self.statuses})

    async def reset(self, request: web.Request) -> web.Response:
        self.requests = self.peak = 0
        self.statuses = {}
        return web.json_response({"ok": True})


async def serve(latency: float, port_file: str, faults: Faults | None = None) -> None:
    server = Server(latency, faults)
    app = web.Application(client_max_size=8 * 2**20)
    app.add_routes([web.post("/v1/chat/completions", server.chat),
                    web.get("/v1/models", server.models),
                    web.get("/stats", server.stats), web.post("/reset", server.reset)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    tmp = f"{port_file}.tmp"
    with open(tmp, "w") as out:
        json.dump({"port": port, "pid": os.getpid()}, out)
    os.replace(tmp, port_file)  # the parent polls for this file
    await asyncio.Event().wait()


def start_server(latency: float, workdir: Path, fault_args: list[str] | None = None
                 ) -> tuple[str, subprocess.Popen]:
    port_file = workdir / ("faults-port.json" if fault_args else "port.json")
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--latency", str(latency),
                             "--port-file", str(port_file), *(fault_args or [])])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the latency server did not start")
        time.sleep(0.05)
    port = json.loads(port_file.read_text())["port"]
    return f"http://127.0.0.1:{port}", proc


def server_stats(root: str, reset: bool = False) -> dict:
    if reset:
        _OPENER.open(urllib.request.Request(f"{root}/reset", data=b"{}", method="POST"))
    with _OPENER.open(f"{root}/stats") as resp:
        return json.loads(resp.read())


def body(i: int, tag: str) -> dict:
    return {"model": "latency-model", "max_tokens": 64,
            "messages": [{"role": "user", "content": f"{tag} question {i}: sort a list"}]}


async def raw_burst(url: str, concurrency: int, n: int) -> float:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(i: int) -> None:
            async with sem, session.post(f"{url}/chat/completions",
                                         json=body(i, "raw")) as resp:
                await resp.read()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - start)


def client_rate(url: str, in_flight: int, n: int, cache_path: Path) -> float:
    cfg = LLMConfig(provider="openai", base_url=url, model="latency-model",
                    max_in_flight=in_flight, timeout_s=60)
    client = LLMClient(cfg, url, "bench-dummy", f"bench@{url}", RequestCache(cache_path))
    requests = [ChatRequest(body(i, f"client{in_flight}")["messages"], max_tokens=64)
                for i in range(n)]
    start = time.perf_counter()
    results = client.chat_many(requests, progress=False)
    elapsed = time.perf_counter() - start
    assert client.stats["calls"] == n and not any(r.cached for r in results)
    return n / elapsed


async def sdk_async_rate(url: str, in_flight: int, n: int) -> float:
    import openai

    api = openai.AsyncOpenAI(base_url=url, api_key="bench-dummy", max_retries=0,
                             http_client=openai.DefaultAsyncHttpxClient(trust_env=False))
    sem = asyncio.Semaphore(in_flight)

    async def one(i: int) -> None:
        async with sem:
            await api.chat.completions.create(**body(i, f"sdk{in_flight}"))

    await one(-1)  # connection and lazy imports outside the timing
    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    rate = n / (time.perf_counter() - start)
    await api.close()
    return rate


def sequential_rate(url: str, n: int) -> float:
    import openai

    api = openai.OpenAI(base_url=url, api_key="bench-dummy", max_retries=0,
                        http_client=openai.DefaultHttpxClient(trust_env=False))
    api.chat.completions.create(**body(-1, "seq"))
    start = time.perf_counter()
    for i in range(n):
        api.chat.completions.create(**body(i, "seq"))
    return n / (time.perf_counter() - start)


def throughput(url: str, latency: float, levels: list[int], waves: int, workdir: Path,
               sdk: bool) -> None:
    # Warm up imports and the loopback path once, outside every timing.
    client_rate(url, 1, 2, workdir / "warmup.sqlite")
    seq = sequential_rate(url, max(10, waves))
    print(f"\nLLMClient.chat_many, {latency * 1000:.0f} ms per request, fresh cache per "
          f"level (every call hits the server); sequential openai.OpenAI baseline: "
          f"{seq:.2f} req/s ({seq * latency:.2f}x of 1/latency)")
    head = f"{'in flight':>9} {'requests':>8} {'req/s':>8} {'ideal':>7} {'ratio':>6} " \
           f"{'x sequential':>12}"
    print(head + (f" {'openai SDK async':>16} {'ratio':>6}" if sdk else ""))
    for level in levels:
        n = max(20, level * waves)
        rate = client_rate(url, level, n, workdir / f"level{level}.sqlite")
        ideal = level / latency
        line = (f"{level:>9} {n:>8} {rate:>8.1f} {ideal:>7.0f} {rate / ideal:>6.3f} "
                f"{rate / seq:>12.1f}")
        if sdk:
            sdk_rate = asyncio.run(sdk_async_rate(url, level, n))
            line += f" {sdk_rate:>16.1f} {sdk_rate / ideal:>6.3f}"
        print(line, flush=True)


def evolve_bench(url: str, root: str, seeds: list[dict], in_flight: int, judge: bool,
                 cache_path: Path) -> tuple[float, dict]:
    cfg = LLMConfig(provider="openai", base_url=url, model="latency-model",
                    max_in_flight=in_flight, timeout_s=60)
    client = LLMClient(cfg, url, "bench-dummy", f"bench@{url}", RequestCache(cache_path))
    rules = ["truncated", "empty", "template_copy", "refusal"] + (["judge_equal"] if judge
                                                                    else [])
    config = from_dict(EvolveConfig, {"eliminate": rules, "evolve_max_tokens": 160}, "evolve")
    server_stats(root, reset=True)
    start = time.perf_counter()
    _, _, stats = evolve_round(seeds, config, client, "r1", model="latency-model",
                               progress=False)
    wall = time.perf_counter() - start
    return wall, {"server_calls": server_stats(root)["requests"], "kept": stats["kept"],
                  "calls": stats["network_calls"]}


def evolution(url: str, root: str, latency: float, in_flight: int, workdir: Path,
              distilabel_python: str | None) -> None:
    seeds, _ = load_seeds(SeedConfig(source="bundled", limit=0))
    ideal_steps = -(-len(seeds) // in_flight) * latency
    print(f"\nOne evolve round over the {len(seeds)} bundled seeds, {in_flight} in flight, "
          f"{latency * 1000:.0f} ms per request (a step of {len(seeds)} requests takes "
          f">= {ideal_steps:.1f} s)")
    print(f"{'engine':<44} {'wall s':>7} {'server calls':>12} {'kept':>5}")
    for judge in (True, False):
        wall, info = evolve_bench(url, root, seeds, in_flight, judge,
                                  workdir / f"evolve{int(judge)}.sqlite")
        name = "wizardcoder evolve_round (evolve+answer+judge)" if judge else \
            "wizardcoder evolve_round (evolve+answer)"
        print(f"{name:<44} {wall:>7.2f} {info['server_calls']:>12} {info['kept']:>5}",
              flush=True)
    if not distilabel_python:
        print("distilabel: skipped (pass --distilabel-python PATH of a venv with distilabel)")
        return
    seeds_path = workdir / "seeds.jsonl"
    seeds_path.write_text("".join(json.dumps(r) + "\n" for r in seeds))
    server_stats(root, reset=True)
    try:
        proc = subprocess.run([distilabel_python, str(ROOT / "bench" / "evolve_distilabel.py"),
                               "--base-url", url, "--seeds", str(seeds_path),
                               "--batch-size", str(in_flight)],
                              capture_output=True, text=True, timeout=600,
                              env={**os.environ, "DISTILABEL_LOG_LEVEL": "WARNING"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"distilabel: not run ({exc})")
        return
    if proc.returncode != 0:
        print(f"distilabel: failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    calls = server_stats(root)["requests"]
    name = f"distilabel {info['distilabel']} EvolInstruct (evolve+answer)"
    print(f"{name:<44} {info['wall_s']:>7.2f} {calls:>12} {info['answered']:>5}"
          f"   (of which {info['load_s']:.2f} s to import and load)")


def synthetic_seeds(n: int) -> list[dict]:
    """Code Alpaca-style rows (instruction, sometimes an input), varied enough not to repeat."""
    rng = random.Random(0)
    verbs = ["Write a function that", "Create a Python program to", "Implement a method that",
             "Write a SQL query to", "Design a class that", "Write a JavaScript function to"]
    tasks = ["returns the {k}th largest element of a list", "counts the vowels in a string",
             "checks whether a number is prime", "reverses the words of a sentence",
             "merges two sorted lists", "finds duplicate values in an array",
             "converts Celsius to Fahrenheit", "computes the nth Fibonacci number",
             "removes punctuation from a string", "validates an email address",
             "returns the {k} most common words of a text", "flattens a nested list"]
    rows = []
    for i in range(n):
        text = f"{rng.choice(verbs)} {rng.choice(tasks).format(k=rng.randint(2, 9))}."
        inp = f"[{', '.join(str(rng.randint(0, 99)) for _ in range(rng.randint(3, 8)))}]" \
            if rng.random() < 0.4 else ""
        sid = f"syn{i:05d}"
        rows.append({"id": sid, "instruction": f"{text} (case {i})", "input": inp,
                     "output": "pass", "lineage": {"seed_id": sid, "source": "synthetic"}})
    return rows


def realistic(args, workdir: Path) -> None:
    alpaca = Path(args.alpaca) if args.alpaca else None
    if alpaca is not None and alpaca.exists():
        seeds, _ = load_seeds(SeedConfig(source="file", path=str(alpaca), limit=args.seeds))
        where = f"{alpaca} ({len(seeds)} rows)"
    else:
        if alpaca is not None:
            print(f"{alpaca} not found: using synthetic Code Alpaca-style seeds")
        seeds, where = synthetic_seeds(args.seeds), f"{args.seeds} synthetic rows"
    fault_args = ["--fault-400", str(args.fault_400), "--burst-every", str(args.burst_every),
                  "--burst-len", str(args.burst_len), "--retry-after", str(args.retry_after),
                  "--sigma", str(args.sigma)]
    root, proc = start_server(args.latency, workdir, fault_args)
    url = f"{root}/v1"
    cfg = LLMConfig(provider="openai", base_url=url, model="latency-model",
                    max_in_flight=args.in_flight, timeout_s=60, max_retries=8,
                    backoff_initial_s=0.5, backoff_max_s=8,
                    price_per_million_prompt_tokens=0.15,
                    price_per_million_completion_tokens=0.60)
    client = LLMClient(cfg, url, "bench-dummy", f"bench@{url}",
                       RequestCache(workdir / "realistic.sqlite"))
    config = from_dict(EvolveConfig, {"evolve_max_tokens": 160, "answer_max_tokens": 320,
                                      "max_failed_fraction": 0.05}, "evolve")
    print(f"\n{args.rounds} evolve rounds over {where}, {args.in_flight} in flight, median "
          f"latency {args.latency * 1000:.0f} ms (log-normal sigma {args.sigma}), "
          f"{args.fault_400:.0%} of prompts get 400 context_length_exceeded, 429 for "
          f"{args.burst_len:g} s every {args.burst_every:g} s (Retry-After "
          f"{args.retry_after:g} s)")
    head = (f"{'round':>5} {'wall s':>7} {'200':>6} {'400':>5} {'429':>5} {'calls':>6} "
            f"{'answers not sent':>16} {'extra judges':>12} {'kept':>5} "
            f"{'dropped per verdict':<60}")
    print(head)
    rows = seeds
    total = {"wall": 0.0, "calls": 0, "saved": 0, "extra": 0, "saved_usd": 0.0,
             "extra_usd": 0.0, "cost_usd": 0.0}
    try:
        for n in range(1, args.rounds + 1):
            server_stats(root, reset=True)
            start = time.perf_counter()
            rows, _, st = evolve_round(rows, config, client, f"r{n}", model="latency-model",
                                       progress=False)
            wall = time.perf_counter() - start
            codes = server_stats(root)["statuses"]
            jf = st["judge_first"]
            verdicts = {k: v for k, v in st["dropped_by_rule"].items() if v}
            errors = {k: v for k, v in st["request_errors"].items() if v}
            print(f"{n:>5} {wall:>7.1f} {codes.get('200', 0):>6} {codes.get('400', 0):>5} "
                  f"{codes.get('429', 0):>5} {st['network_calls']:>6} "
                  f"{jf['answer_calls_not_sent']:>16} {jf['judge_calls_extra']:>12} "
                  f"{st['kept']:>5} {verdicts} request_error classes {errors}", flush=True)
            total["wall"] += wall
            total["calls"] += st["network_calls"]
            total["saved"] += jf["answer_calls_not_sent"]
            total["extra"] += jf["judge_calls_extra"]
            total["saved_usd"] += jf["cost_usd_est"]
            total["extra_usd"] += jf["judge_cost_usd_extra"]
            total["cost_usd"] += st["cost_usd"]
    finally:
        proc.kill()
        proc.wait()
    net = total["saved"] - total["extra"]
    print(f"total: {total['wall']:.1f} s, {total['calls']} calls; the judge-first order did not "
          f"send {total['saved']} answers (max_tokens {config.answer_max_tokens} each) and "
          f"sent {total['extra']} extra judge calls (max_tokens {config.judge_max_tokens}): "
          f"{net} calls fewer ({net / (total['calls'] + net):.1%} of the answer-first order's "
          f"{total['calls'] + net})")
    saved = total["saved_usd"] - total["extra_usd"]
    print(f"cost at $0.15 / $0.60 per million prompt / completion tokens: ${total['cost_usd']:.3f} "
          f"spent; the order saved ~${saved:.3f} net (answers ~${total['saved_usd']:.3f} minus "
          f"extra judges ${total['extra_usd']:.3f}): {saved / (total['cost_usd'] + saved):.1%} "
          f"of the answer-first order's cost")


# -- --batch: the Batch API at scale, under faults -------------------------------------------


def serve_batch(args) -> None:
    """The Batch API server of ``--batch`` (its own process): tests/fake_openai.BatchServer
    answering with this module's realistic texts, plus the faults listed in the docstring
    and GET /stats."""
    import threading
    from collections import Counter

    from tests.fake_openai import CONTEXT_LENGTH, SERVER_ERROR, BatchServer, Reply

    seen: set[str] = set()
    lock = threading.Lock()

    def respond(body: dict):
        prompt = str(body["messages"][-1]["content"])
        if _share(prompt, "400") < args.fault_400:
            return CONTEXT_LENGTH
        with lock:
            first = prompt not in seen
            seen.add(prompt)
        if first and _share(prompt, "5xx") < args.fault_5xx:
            return SERVER_ERROR
        return Reply(completion_text(body["messages"], realistic=True))

    class Server(BatchServer):
        def _work(self, batch: dict, content: bytes) -> None:
            self._stop.wait(args.queue_s)  # the provider's queue
            super()._work(batch, content)

        def _handler_class(self):
            base, server = super()._handler_class(), self

            class Handler(base):
                def do_GET(self) -> None:
                    if self.path == "/stats":
                        with server._lock:
                            paid = server.paid
                            statuses = Counter(b["status"] for b in server.batches.values())
                            stats = {"paid_lines": sum(paid.values()),
                                     "paid_twice": sum(1 for n in paid.values() if n > 1),
                                     "batches": dict(statuses),
                                     "created": server.created,
                                     "lists": server.requests["GET /v1/batches"],
                                     "outage_503": server.outage_hits,
                                     "online": len(server.chat_bodies)}
                        self._json(200, stats)
                    else:
                        super().do_GET()

            return Handler

    with Server(responder=respond, expire_after=args.expire_after) as server:
        server.shuffle = True
        server.lose_creates, server.flood_after_lost_create = 2, 1100
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as out:
            json.dump({"port": int(server.url.split(":")[-1].split("/")[0])}, out)
        os.replace(tmp, args.port_file)
        while True:  # the API is down for outage_s every 20 s; batches keep running
            time.sleep(20)
            server.outage(args.outage_s)
            server.fail_polls = 3


def batch_rounds(args, workdir: Path, mode: str) -> tuple[list[list[dict]], dict]:
    port_file = workdir / f"batch-{mode}.json"
    proc = subprocess.Popen([sys.executable, __file__, "--serve-batch", "--port-file",
                             str(port_file), "--fault-400", str(args.fault_400),
                             "--fault-5xx", str(args.fault_5xx), "--queue-s",
                             str(args.queue_s), "--expire-after", str(args.expire_after),
                             "--outage-s", str(args.outage_s)])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the batch server did not start")
        time.sleep(0.05)
    root = f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}"
    url = f"{root}/v1"
    cfg = LLMConfig(provider="openai", base_url=url, model="fault-model", mode=mode,
                    max_in_flight=args.in_flight, timeout_s=60, max_retries=3,
                    backoff_initial_s=0.05, backoff_max_s=0.5, batch_poll_s=0.5,
                    batch_poll_max_s=2.0, batch_retries=3)
    client = LLMClient(cfg, url, "bench-dummy", f"bench@{url}",
                       RequestCache(workdir / f"batch-{mode}.sqlite"))
    # 1% of prompts failing over 3 calls per row drops ~3% of rows: 0.05 as in --realistic
    config = from_dict(EvolveConfig, {"evolve_max_tokens": 160, "answer_max_tokens": 320,
                                      "max_failed_fraction": 0.05}, "evolve")
    rows, outputs = synthetic_seeds(args.seeds), []
    start = time.perf_counter()
    failed = 0
    try:
        for n in range(1, args.rounds + 1):
            rows, _, st = evolve_round(rows, config, client, f"r{n}", model="fault-model",
                                       progress=False)
            outputs.append(rows)
            failed += len(st["failed_rows"])
        wall = time.perf_counter() - start
        with _OPENER.open(f"{root}/stats") as resp:
            stats = json.loads(resp.read())
    finally:
        proc.kill()
        proc.wait()
    stats.update(wall=wall, kept=sum(1 for r in rows if not r.get("carried")),
                 failed_rows=failed, calls=client.stats["calls"])
    return outputs, stats


def batch_bench(args, workdir: Path) -> None:
    print(f"\n{args.rounds} evolve rounds over {args.seeds} synthetic seeds, llm.mode batch vs "
          f"online, tests/fake_openai.BatchServer: {args.fault_5xx:.0%} of requests 500 once, "
          f"{args.fault_400:.0%} of prompts 400 context_length, batches expire after "
          f"{args.expire_after} lines, queue {args.queue_s:g} s, shuffled output, 2 lost "
          f"creates behind 1,100 newer batches each, {args.outage_s:g} s of 503s every 20 s")
    results = {}
    for mode in ("batch", "online"):
        results[mode] = batch_rounds(args, workdir, mode)
        st = results[mode][1]
        print(f"{mode:>6}: {st['wall']:.1f} s; batches {st['batches']} ({st['created']} created "
              f"by the client, {st['lists']} GET /v1/batches pages), {st['outage_503']} calls "
              f"answered 503; {st['paid_lines']} batch lines paid, paid twice: "
              f"{st['paid_twice']}; {st['online']} online requests; last round "
              f"{st['kept']} evolved rows of {args.seeds}, {st['failed_rows']} rows dropped "
              f"for a permanent failure over all rounds", flush=True)
    same = all(b == o for b, o in zip(results["batch"][0], results["online"][0], strict=True))
    print(f"same rows in every round, batch vs online: {same}; requests paid twice in batch "
          f"mode: {results['batch'][1]['paid_twice']}")
    if not same or results["batch"][1]["paid_twice"]:
        raise SystemExit(1)


def cache_commits(workdir: Path, n: int = 5000, chunk: int = 1000) -> None:
    """Storing a Batch API output file: one commit (fsync) per answer vs one per chunk."""
    from wizardcoder.llm.cache import RequestCache

    def put(cache, key: str) -> None:
        cache.put(key, model_identity="m", request={"key": key}, text="x" * 500,
                  finish_reason="stop", prompt_tokens=100, completion_tokens=100, model="m")

    with RequestCache(workdir / "commits.sqlite") as cache:
        start = time.perf_counter()
        for i in range(n):
            put(cache, f"one-{i}")
        each = time.perf_counter() - start
        start = time.perf_counter()
        for first in range(0, n, chunk):
            with cache.transaction():
                for i in range(first, min(n, first + chunk)):
                    put(cache, f"chunk-{i}")
        chunked = time.perf_counter() - start
    print(f"cache: {n} answers, one commit each {each:.2f} s ({n / each:.0f}/s); "
          f"one commit per {chunk} {chunked:.2f} s ({n / chunked:.0f}/s) = "
          f"{each / chunked:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    parser.add_argument("--levels", default="1,8,32,128", help="requests in flight")
    parser.add_argument("--waves", type=int, default=20,
                        help="requests per level = in flight x waves (ramp-up amortised)")
    parser.add_argument("--no-sdk", action="store_true",
                        help="skip the openai AsyncOpenAI column")
    parser.add_argument("--distilabel-python", help="python of a venv with distilabel")
    parser.add_argument("--skip-evolve", action="store_true")
    parser.add_argument("--realistic", action="store_true",
                        help="only the rounds against the faulty server (see above)")
    parser.add_argument("--alpaca", help="Code Alpaca JSON for --realistic (else synthetic)")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds for --realistic (default 2000) and --batch (20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds for --realistic")
    parser.add_argument("--in-flight", type=int, default=64, help="for --realistic")
    parser.add_argument("--fault-400", type=float, default=0.01,
                        help="share of prompts answered 400 context_length_exceeded")
    parser.add_argument("--burst-every", type=float, default=8.0,
                        help="seconds between 429 bursts (0 = none)")
    parser.add_argument("--burst-len", type=float, default=0.5, help="seconds of each burst")
    parser.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429")
    parser.add_argument("--sigma", type=float, default=0.5,
                        help="log-normal spread of the latency (0 = fixed)")
    parser.add_argument("--cache-commits", action="store_true",
                        help="only: storing 5,000 answers one commit each vs in chunks "
                             "(what llm.mode=batch does with an output file)")
    parser.add_argument("--batch", action="store_true",
                        help="only: llm.mode batch vs online at scale under faults (see above)")
    parser.add_argument("--fault-5xx", type=float, default=0.05,
                        help="--batch: share of requests that fail with 500 the first time")
    parser.add_argument("--expire-after", type=int, default=15000,
                        help="--batch: lines a batch runs before it expires")
    parser.add_argument("--queue-s", type=float, default=1.0,
                        help="--batch: seconds a batch waits in the provider's queue")
    parser.add_argument("--outage-s", type=float, default=4.0,
                        help="--batch: seconds of 503s from the Batch API every 20 s")
    parser.add_argument("--serve-batch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_batch:
        serve_batch(args)
        return
    if args.serve:  # the server process started by start_server()
        faulty = "--fault-400" in sys.argv
        faults = Faults(args.fault_400, args.burst_every, args.burst_len, args.retry_after,
                        args.sigma) if faulty else None
        asyncio.run(serve(args.latency, args.port_file, faults))
        return
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="wizardcoder-bench-") as tmp:
        workdir = Path(tmp)
        if args.cache_commits:
            cache_commits(workdir)
            return
        if args.realistic:
            args.seeds = args.seeds or 2000
            realistic(args, workdir)
            return
        if args.batch:
            args.seeds = args.seeds or 20000
            batch_bench(args, workdir)
            return
        root, server = start_server(args.latency, workdir)
        url = f"{root}/v1"
        try:
            server_stats(root, reset=True)
            burst = asyncio.run(raw_burst(url, 256, 256 * 4))
            peak = server_stats(root)["peak_in_flight"]
            print(f"server check: raw aiohttp burst of 256 in flight -> peak {peak} held at "
                  f"once, {burst:.0f} req/s ({burst / (256 / args.latency):.2f}x ideal)")
            throughput(url, args.latency, levels, args.waves, workdir, not args.no_sdk)
            if not args.skip_evolve:
                evolution(url, root, args.latency, 32, workdir, args.distilabel_python)
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
