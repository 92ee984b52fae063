"""Headline metrics and their details: the two files a stage writes its figures to.

dvc.yaml declares as ``metrics:`` only files of numbers people compare across experiments
(pass@k with its interval, dev pass@1, losses, rows kept per round and merged, tokens, cost,
calls), so ``dvc exp show`` stays a readable table. Everything else a stage counts (per step,
rule, method, verdict, isolation layer...) goes to its details file under
``metrics/details/``: a DVC output with ``cache: false`` that is not a metric, read by the
report and MLflow. docs/experiments.md ("Metrics") lists both files' keys.
"""

from __future__ import annotations

from pathlib import Path

from wizardcoder.jsonl import write_json

DETAILS_DIR = "metrics/details"


def write_metrics(path: str | Path, record: dict, headline: dict,
                  details: str | Path | None) -> None:
    """``details`` given (the DVC stage): ``record`` there and ``headline`` to ``path``;
    None (a command run by hand): the whole ``record`` to ``path``, nothing else."""
    if details is None:
        write_json(path, record)
        return
    write_json(details, record)
    write_json(path, headline)
