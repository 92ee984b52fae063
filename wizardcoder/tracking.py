"""MLflow tracking: a parent run per pipeline execution, one nested run per stage.

The store is a sqlite file at the project root (absolute, from DVC_ROOT when DVC runs a
queued experiment in a temp copy) so every experiment logs to the same place.

DVC starts each stage as its own process, so the stages of one execution find their common
parent by a deterministic key, the ``pipeline_key`` tag: a hash of the DVC experiment name
(``workspace`` outside ``dvc exp``), the baseline git revision and the sha256 of the
params.yaml the stages read. The first stage creates the parent (under a file lock, then a
re-check that keeps the oldest parent if two processes still raced, e.g. against a remote
server) and logs every params section on it; each stage copies its headline metrics to it
(score's pass@k as ``pass_at_k``, the others prefixed with the stage), so the runs table has
one row per experiment. Secrets never get here: params come from params.yaml and the typed
configs, which hold environment-variable *names*, and any value equal to a secret-looking
environment variable is redacted before it is logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wizardcoder.config import flatten, read_params
from wizardcoder.credentials import REDACTED, is_secret_param, secret_env_values
from wizardcoder.credentials import redact as redact_text
from wizardcoder.errors import ConfigError
from wizardcoder.paths import cache_dir, project_root

log = logging.getLogger(__name__)

EXPERIMENT_NAME = os.environ.get("WIZARDCODER_MLFLOW_EXPERIMENT", "wizardcoder")
PIPELINE_KEY_TAG = "pipeline_key"
ROLE_TAG = "pipeline_role"  # "pipeline" on parents, "stage" on stage runs
# Metrics each stage copies to its parent run (after metric_name(): '@' -> '_at_').
HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "seed": ("rows",),
    "evolve": ("kept", "dropped", "keep_rate", "network_calls", "cost_usd"),
    "merge": ("rows", "removed"),
    "train": ("train_loss", "eval_loss", "train_runtime_s", "train_tokens_per_s"),
    "generate": ("tasks", "generated", "seconds"),
    "score": ("pass_at_1", "pass_at_10", "pass_at_100", "tasks", "samples"),
    "score_dev": ("pass_at_1", "tasks"),  # the held-out dev score that picks the rounds
}
UNPREFIXED_STAGES = ("score",)  # pass_at_1 rather than score.pass_at_1 on the parent
_PASS_AT = re.compile(r"(^|_)pass_at_\d+$")


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


def experiment_name() -> str:
    return os.environ.get("DVC_EXP_NAME") or "workspace"


def params_file(explicit: str | Path | None = None) -> Path:
    """The params.yaml the stages read: DVC runs them in the (experiment's) repo root."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("WIZARDCODER_PARAMS_FILE")
    return Path(env) if env else Path.cwd() / "params.yaml"


def params_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes() if path.is_file() else b"").hexdigest()


def pipeline_key(exp_name: str, baseline_rev: str, params_hash: str) -> str:
    return hashlib.sha256(f"{exp_name}\n{baseline_rev}\n{params_hash}".encode()).hexdigest()[:32]


def redact(data: dict[str, Any]) -> dict[str, str]:
    """Flat str->str mapping with secret-named keys and secret env values blanked."""
    secrets = secret_env_values()
    out = {}
    for key, value in flatten(data).items():
        text = "null" if value is None else str(value)
        if is_secret_param(key) and value:
            text = REDACTED
        out[key] = redact_text(text, secrets)[:6000]
    return out


def _setup_mlflow():
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        artifacts = (project_root() / "mlartifacts").resolve()
        try:
            mlflow.create_experiment(EXPERIMENT_NAME, artifact_location=artifacts.as_uri())
        except Exception:  # another stage process created it first
            if mlflow.get_experiment_by_name(EXPERIMENT_NAME) is None:
                raise
    mlflow.set_experiment(EXPERIMENT_NAME)
    return mlflow


def metric_name(key: str) -> str:
    """MLflow rejects '@' in metric names: pass@1 is logged as pass_at_1."""
    return key.replace("@", "_at_")


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {metric_name(k): float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class StageRun:
    """A thin handle on the active MLflow run (or a no-op when tracking is off)."""

    def __init__(self, mlflow_module=None, client=None, parent_id: str | None = None):
        self._mlflow = mlflow_module
        self._client = client
        self.parent_id = parent_id  # the pipeline's parent run
        self.summary: dict[str, float] = {}  # last step-less value of each metric

    @property
    def mlflow(self):
        return self._mlflow

    @property
    def git_commit(self) -> str:
        return git_revision()

    def log_to_parent(self, metrics: dict[str, float] | None = None,
                      params: dict[str, str] | None = None,
                      tags: dict[str, str] | None = None) -> None:
        """Metrics, params (already redacted) and tags on the pipeline's parent run."""
        if not self._mlflow or self.parent_id is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        items = ([Metric(k, v, now, 0) for k, v in sorted((metrics or {}).items())],
                 [Param(k, v) for k, v in sorted((params or {}).items())],
                 [RunTag(k, v) for k, v in sorted(redact(tags or {}).items())])
        for i in range(0, max(map(len, items)), 100):  # MLflow's batch limit per kind
            self._client.log_batch(self.parent_id, metrics=items[0][i:i + 100],
                                   params=items[1][i:i + 100], tags=items[2][i:i + 100])

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self._mlflow:
            return
        clean = numeric_metrics(metrics)
        if clean:
            self._mlflow.log_metrics(clean, step=step)
            if step is None:
                self.summary.update(clean)

    def log_params(self, params: dict[str, Any]) -> None:
        if self._mlflow:
            self._mlflow.log_params(redact(params))

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow and Path(path).exists():
            self._mlflow.log_artifact(str(path))

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._mlflow:
            self._mlflow.set_tags(redact(tags))


# -- the parent run ------------------------------------------------------------------------

@contextmanager
def _file_lock(name: str):
    """An exclusive lock between the stage processes of this machine (fcntl; no-op where
    unavailable: the oldest-parent re-check still resolves a race)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(cache_dir() / name, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_parents(client, experiment_id: str, key: str) -> list:
    """Live parent runs with this key, oldest first (ties broken by run id)."""
    runs = client.search_runs([experiment_id], f"tags.{PIPELINE_KEY_TAG} = '{key}' and "
                              f"tags.{ROLE_TAG} = 'pipeline'", max_results=100)
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def parent_run_name(exp_name: str, baseline_rev: str, params_hash: str) -> str:
    if exp_name != "workspace":
        return exp_name
    return f"workspace@{baseline_rev[:7]} params {params_hash[:8]}"


def _log_params_batch(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=items[i:i + 100])


def find_or_create_parent(client, experiment_id: str, tags: dict[str, str],
                          params: dict[str, Any]) -> str:
    """The run id of this pipeline's parent run, created (with params) if none exists."""
    key = tags[PIPELINE_KEY_TAG]
    with _file_lock("mlflow-parent.lock"):
        found = find_parents(client, experiment_id, key)
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=tags["mlflow.runName"], tags=tags)
        _log_params_batch(client, run.info.run_id, redact(params))
        winners = find_parents(client, experiment_id, key)
    winner = winners[0].info.run_id if winners else run.info.run_id
    if winner != run.info.run_id:  # lost a race with another machine: keep the oldest
        client.delete_run(run.info.run_id)
    return winner


def _params_or_nothing(path: Path) -> dict[str, Any]:
    """The params to log on a new parent run; {} when the file is missing or unreadable:
    the stage reports a bad params file itself, tracking must not fail first."""
    try:
        return read_params(path)
    except (ConfigError, OSError, UnicodeDecodeError):
        return {}


def pipeline_tags(params_path: Path) -> dict[str, str]:
    """Tags shared by the parent and its stage runs."""
    exp_name, baseline = experiment_name(), git_revision()
    digest = params_sha256(params_path)
    return {
        PIPELINE_KEY_TAG: pipeline_key(exp_name, baseline, digest),
        "dvc_exp_name": exp_name,
        "dvc_baseline_rev": baseline,
        "git_revision": baseline,
        "params_sha256": digest,
    }


def headline_metrics(stage: str, summary: dict[str, float]) -> dict[str, float]:
    base = stage.split("@")[0]
    names = HEADLINE_METRICS.get(base, ())
    prefix = "" if base in UNPREFIXED_STAGES else stage.replace("@", "_") + "."
    picked = {f"{prefix}{n}": summary[n] for n in names if n in summary}
    if base == "score":  # any other pass@k the stage reported (plus_pass_at_k: HumanEval+)
        picked.update({k: v for k, v in summary.items() if _PASS_AT.search(k)})
    return picked


def _finish_parent(client, parent_id: str, stage: str, summary: dict[str, float],
                   status: str) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in headline_metrics(stage, summary).items()]
    if metrics:
        client.log_batch(parent_id, metrics=metrics)
    client.set_tag(parent_id, "last_stage", stage)
    client.set_terminated(parent_id, status=status)


@contextmanager
def stage_run(stage: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              *, params_path: str | Path | None = None, nested: bool = True,
              run_name: str | None = None):
    """Open one MLflow run for a stage, nested under its pipeline's parent run; yields a
    :class:`StageRun`. ``params_path`` defaults to $WIZARDCODER_PARAMS_FILE or
    ./params.yaml (the file the stage reads when DVC runs it). ``nested=False``: a run of
    its own, outside every pipeline (e.g. scoring someone else's samples)."""
    if not enabled():
        yield StageRun(None)
        return
    if not nested:
        mlflow = _setup_mlflow()
        own_tags = {ROLE_TAG: "standalone", "stage": stage, "git_revision": git_revision()}
        with mlflow.start_run(run_name=run_name or stage,
                              tags={**own_tags, **redact(tags or {})}):
            handle = StageRun(mlflow)
            if params:
                handle.log_params(params)
            yield handle
        return
    mlflow = _setup_mlflow()
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    path = params_file(params_path)
    shared = pipeline_tags(path)
    exp_name = shared["dvc_exp_name"]
    parent_tags = {**shared, ROLE_TAG: "pipeline", "params_file": str(path),
                   "mlflow.runName": parent_run_name(exp_name, shared["dvc_baseline_rev"],
                                                     shared["params_sha256"]),
                   "mlflow.source.name": "dvc.yaml"}
    parent_id = find_or_create_parent(client, experiment_id, parent_tags, _params_or_nothing(path))
    client.update_run(parent_id, status="RUNNING")
    run_name = stage if exp_name == "workspace" else f"{exp_name}/{stage}"
    all_tags = {**shared, ROLE_TAG: "stage", "stage": stage,
                "mlflow.source.name": f"stages/{stage.split('@')[0]}.py"}
    all_tags.update(redact(tags or {}))
    handle = StageRun(mlflow, client, parent_id)
    status = "FAILED"
    try:
        with mlflow.start_run(run_name=run_name, tags=all_tags, nested=True,
                              parent_run_id=parent_id):
            if params:
                handle.log_params(params)
            yield handle
        status = "FINISHED"
    finally:
        try:
            _finish_parent(client, parent_id, stage, handle.summary, status)
        except Exception as exc:  # never hide the stage's own error behind a tracking one
            log.warning("MLflow: could not update the parent run %s: %s", parent_id, exc)
