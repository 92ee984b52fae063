"""MLflow tracking: one run per stage in a sqlite store at the project root.

The store path is absolute (from DVC_ROOT when DVC runs a queued experiment in a temp
copy) so every experiment logs to the same place. Runs are tagged with the stage, the DVC
experiment name and the git revision. Secrets never get here: params are logged from the
typed configs, which hold environment-variable *names*, never key values.
"""

from __future__ import annotations

import logging
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wizardcoder.config import flatten
from wizardcoder.paths import project_root

log = logging.getLogger(__name__)

EXPERIMENT_NAME = os.environ.get("WIZARDCODER_MLFLOW_EXPERIMENT", "wizardcoder")


def tracking_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def enabled() -> bool:
    return os.environ.get("WIZARDCODER_MLFLOW", "1") not in ("0", "false", "off")


def git_revision(root: Path | None = None) -> str:
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        return baseline
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root or project_root(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _setup_mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        artifacts = (project_root() / "mlartifacts").resolve()
        mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(EXPERIMENT_NAME)
    return mlflow


def metric_name(key: str) -> str:
    """MLflow rejects '@' in metric names: pass@1 is logged as pass_at_1."""
    return key.replace("@", "_at_")


class StageRun:
    """A thin handle on the active MLflow run (or a no-op when tracking is off)."""

    def __init__(self, mlflow_module=None):
        self._mlflow = mlflow_module

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self._mlflow:
            return
        clean = {metric_name(k): float(v) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        if not self._mlflow:
            return
        flat = {k: ("null" if v is None else str(v)[:6000]) for k, v in flatten(params).items()}
        self._mlflow.log_params(flat)

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow and Path(path).exists():
            self._mlflow.log_artifact(str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._mlflow:
            self._mlflow.set_tags(tags)


@contextmanager
def stage_run(stage: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None):
    """Open one MLflow run for a stage; yields a :class:`StageRun`."""
    if not enabled():
        yield StageRun(None)
        return
    mlflow = _setup_mlflow()
    exp_name = os.environ.get("DVC_EXP_NAME", "workspace")
    run_name = f"{stage}" if exp_name == "workspace" else f"{exp_name}/{stage}"
    all_tags = {
        "stage": stage,
        "dvc_exp_name": exp_name,
        "git_revision": git_revision(),
        "mlflow.source.name": f"stages/{stage.split('@')[0]}.py",
    }
    all_tags.update(tags or {})
    with mlflow.start_run(run_name=run_name, tags=all_tags):
        run = StageRun(mlflow)
        if params:
            run.log_params(params)
        yield run
