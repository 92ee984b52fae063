"""MLflow tracking: one parent run per DVC experiment, a nested run per stage that ran.

**Where.** :mod:`wizardcoder.mlflow_store`: the checkout's ``mlflow.db`` (DVC_ROOT in queued
``dvc exp`` runs, which execute in a temp copy) with artifact locations relative to its root,
or MLFLOW_TRACKING_URI; outside a checkout nothing is logged, and the command says so.

**Who.** A command DVC runs as a stage (DVC sets DVC_STAGE) logs a run nested under its
experiment's parent run. The same command run by hand logs a run of its own in the MLflow
experiment ``wizardcoder-by-hand`` and never touches a parent (metrics, params, status).

**The parent.** DVC starts each stage as its own process, so the stages of one experiment
find their parent by a deterministic key, the ``pipeline_key`` tag: a hash of the DVC
experiment name (``workspace`` outside ``dvc exp``), the baseline git revision and the sha256
of the params.yaml the stages read. The first process creates it (under a file lock, then a
re-check that keeps the oldest parent if two machines raced) with every params.yaml key; the
``log`` stage (wizardcoder/log/stage.py) gives it the headline metrics and dvc.lock hashes.

**Names.** Params: ``section.key`` as in params.yaml and ``dvc exp show``. Metrics:
``<group>/<key>``, the key as in its DVC metrics file (``pass@1`` -> ``pass_at_1``) and the
group that file's path under ``metrics/`` (``evolve/r1/r1_kept``, ``train/train_loss``); a
stage run uses its file's group, so a column of the runs table is one quantity. The reported
benchmarks' file, metrics/score.json, is the group ``benchmark``: the MLflow UI sorts metric
names as plain strings and ``benchmark/humaneval.pass_at_1`` comes first. Runs: the parent
is named after the experiment, a stage run ``<experiment>/<stage>``.

Secrets never get here: params come from params.yaml and the typed configs, which hold
environment-variable *names*, and any value equal to a secret-looking environment variable
is redacted before it is logged.
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
from wizardcoder.mlflow_store import (
    at_store,
    checkout_root,
    file_lock,
    open_store,
    tracking_uri,
)
from wizardcoder.paths import project_root

log = logging.getLogger(__name__)

EXPERIMENT_NAME = os.environ.get("WIZARDCODER_MLFLOW_EXPERIMENT", "wizardcoder")
BY_HAND_EXPERIMENT = f"{EXPERIMENT_NAME}-by-hand"  # commands run outside dvc repro / exp run
PIPELINE_KEY_TAG = "pipeline_key"
OUTS_DIGEST_TAG = "dvc_outs_sha256"  # on a parent: the dvc.lock hashes the log stage logged
ROLE_TAG = "pipeline_role"  # "pipeline" on parents, "stage" on stage runs, "standalone"
# Metric groups named otherwise than their metrics file or stage (see the module docstring).
METRIC_GROUPS = {"score": "benchmark", "score_dev": "dev_score"}


# -- where and who -------------------------------------------------------------------------

def enabled() -> bool:
    return os.environ.get("WIZARDCODER_MLFLOW", "1") not in ("0", "false", "off")


def in_pipeline() -> bool:
    """DVC runs this process as a stage of `dvc repro` / `dvc exp run`."""
    return bool(os.environ.get("DVC_STAGE"))


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


# -- names and values ----------------------------------------------------------------------

def metric_group(source: str) -> str:
    """The group of a stage (``evolve@r1``) or of a metrics file (``metrics/evolve/r1.json``):
    ``evolve/r1``; see METRIC_GROUPS."""
    path = Path(source.replace("@", "/"))
    if path.suffix == ".json":
        parts = path.with_suffix("").parts
        path = Path(*parts[1:]) if parts[0] == "metrics" and len(parts) > 1 else Path(*parts)
    name = path.as_posix()
    return METRIC_GROUPS.get(name, name)


def metric_name(key: str) -> str:
    """A name MLflow accepts: pass@1 -> pass_at_1, humaneval+ -> humaneval_plus, any other
    character it rejects -> _."""
    return re.sub(r"[^/\w.\- ]", "_", key.replace("@", "_at_").replace("+", "_plus"))


def numeric_metrics(metrics: dict[str, Any], group: str = "") -> dict[str, float]:
    """The numbers of ``metrics`` (flattened) named ``<group>/<key>``."""
    prefix = f"{group}/" if group else ""
    return {prefix + metric_name(k): float(v) for k, v in flatten(metrics).items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def redact(data: dict[str, Any]) -> dict[str, str]:
    """Flat str->str mapping with secret-named keys and secret env values blanked, and paths
    inside the checkout made relative to it (the store moves with the repository)."""
    secrets = secret_env_values()
    root = checkout_root()
    inside = f"{root}{os.sep}" if root else None
    out = {}
    for key, value in flatten(data).items():
        text = "null" if value is None else str(value)
        if is_secret_param(key) and value:
            text = REDACTED
        if inside and text.startswith(inside):
            text = text[len(inside):]
        out[key] = redact_text(text, secrets)[:6000]
    return out


# -- runs ----------------------------------------------------------------------------------

class StageRun:
    """A thin handle on the active MLflow run (or a no-op when tracking is off)."""

    def __init__(self, mlflow_module=None, client=None, parent_id: str | None = None,
                 group: str = ""):
        self._mlflow = mlflow_module
        self._client = client
        self.parent_id = parent_id  # the pipeline's parent run; None: a run of its own
        self.group = group  # metric names are "<group>/<key>"
        self.summary: dict[str, float] = {}  # last step-less value of each metric

    @property
    def mlflow(self):
        return self._mlflow

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    @property
    def git_commit(self) -> str:
        return git_revision()

    def log_to_parent(self, metrics: dict[str, float] | None = None,
                      params: dict[str, str] | None = None,
                      tags: dict[str, str] | None = None) -> None:
        """Metrics (already named), params (already redacted) and tags on the parent run."""
        if not self._mlflow or self.parent_id is None:
            return
        log_batch(self._client, self.parent_id, metrics, params, redact(tags or {}))

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self._mlflow:
            return
        clean = numeric_metrics(metrics, self.group)
        if clean:
            self._mlflow.log_metrics(clean, step=step)
            if step is None:
                self.summary.update(clean)

    def log_params(self, params: dict[str, Any]) -> None:
        if self._mlflow:
            self._mlflow.log_params(redact(params))

    def log_artifact(self, path: str | Path) -> None:
        if self._mlflow and Path(path).exists():
            source = str(Path(path).resolve())
            with at_store():
                self._mlflow.log_artifact(source)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._mlflow:
            self._mlflow.set_tags(redact(tags))


def log_batch(client, run_id: str, metrics: dict[str, float] | None = None,
              params: dict[str, str] | None = None, tags: dict[str, str] | None = None) -> None:
    """Metrics, params and tags in batches of MLflow's limit (100 of each kind)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    items = ([Metric(k, v, now, 0) for k, v in sorted((metrics or {}).items())],
             [Param(k, v) for k, v in sorted((params or {}).items())],
             [RunTag(k, v) for k, v in sorted((tags or {}).items())])
    for i in range(0, max(map(len, items)), 100):
        client.log_batch(run_id, metrics=items[0][i:i + 100], params=items[1][i:i + 100],
                         tags=items[2][i:i + 100])


def find_parents(client, experiment_id: str, key: str) -> list:
    """Live parent runs with this key, oldest first (ties broken by run id)."""
    runs = client.search_runs([experiment_id], f"tags.{PIPELINE_KEY_TAG} = '{key}' and "
                              f"tags.{ROLE_TAG} = 'pipeline'", max_results=100)
    return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))


def parent_run_name(exp_name: str, baseline_rev: str, params_hash: str) -> str:
    if exp_name != "workspace":
        return exp_name
    return f"workspace@{baseline_rev[:7]} params {params_hash[:8]}"


def experiment_params(path: Path) -> dict[str, str]:
    """Every key of the experiment's params file, flattened and redacted; {} when the file
    is missing or unreadable: the stage reports a bad params file itself, tracking must not
    fail first."""
    try:
        return redact(read_params(path))
    except (ConfigError, OSError, UnicodeDecodeError):
        return {}


def find_or_create_parent(client, experiment_id: str, tags: dict[str, str],
                          params: dict[str, str]) -> str:
    """The run id of this pipeline's parent run, created (with params) if none exists."""
    key = tags[PIPELINE_KEY_TAG]
    with file_lock("mlflow-parent.lock"):
        found = find_parents(client, experiment_id, key)
        if found:
            return found[0].info.run_id
        run = client.create_run(experiment_id, run_name=tags["mlflow.runName"], tags=tags)
        log_batch(client, run.info.run_id, params=params)
        winners = find_parents(client, experiment_id, key)
    winner = winners[0].info.run_id if winners else run.info.run_id
    if winner != run.info.run_id:  # lost a race with another machine: keep the oldest
        client.delete_run(run.info.run_id)
    return winner


def pipeline_tags(params_path: Path) -> dict[str, str]:
    """Tags shared by the parent and its stage runs."""
    exp_name, baseline = experiment_name(), git_revision()
    digest = params_sha256(params_path)
    return {PIPELINE_KEY_TAG: pipeline_key(exp_name, baseline, digest),
            "dvc_exp_name": exp_name, "git_revision": baseline, "params_sha256": digest,
            "mlflow.source.git.commit": baseline}


def find_parent(params_path: str | Path | None = None, outputs: str | None = None):
    """This experiment's parent run as it is now (None: none yet, or not in a pipeline).
    ``outputs`` (the log stage's OUTS_DIGEST_TAG): failing that, a finished parent of the same
    experiment and params, at another revision, that recorded these very outputs (a
    `dvc repro` after committing them)."""
    if not (enabled() and in_pipeline() and tracking_uri()):
        return None
    mlflow, experiment_id = open_store(EXPERIMENT_NAME)
    client = mlflow.MlflowClient()
    tags = pipeline_tags(params_file(params_path))
    found = find_parents(client, experiment_id, tags[PIPELINE_KEY_TAG])
    if not found and outputs:
        found = client.search_runs([experiment_id], " and ".join(
            [f"tags.{ROLE_TAG} = 'pipeline'", "attributes.status = 'FINISHED'",
             f"tags.dvc_exp_name = '{tags['dvc_exp_name']}'",
             f"tags.params_sha256 = '{tags['params_sha256']}'",
             f"tags.{OUTS_DIGEST_TAG} = '{outputs}'"]), max_results=1)
    return found[0] if found else None


@contextmanager
def _standalone_run(mlflow, stage: str, params, tags, run_name: str | None):
    """A run of its own in the by-hand experiment."""
    own_tags = {ROLE_TAG: "standalone", "stage": stage, "git_revision": git_revision(),
                "mlflow.source.name": f"wizardcoder {stage}"}
    name = run_name or stage
    log.info("MLflow: logging run %r to %s (experiment %s)", name, tracking_uri(),
             BY_HAND_EXPERIMENT)
    with mlflow.start_run(run_name=name, tags={**own_tags, **redact(tags or {})}):
        handle = StageRun(mlflow, group=metric_group(stage))
        if params:
            handle.log_params(params)
        yield handle


@contextmanager
def stage_run(stage: str, params: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
              *, params_path: str | Path | None = None, nested: bool = True,
              run_name: str | None = None):
    """Open the MLflow run of one stage; yields a :class:`StageRun`. Under DVC (DVC_STAGE set)
    and ``nested``: nested under the experiment's parent run; otherwise a run of its own in
    the by-hand experiment (``run_name``, default the stage). ``params_path`` defaults to
    $WIZARDCODER_PARAMS_FILE or ./params.yaml (the file the stage reads when DVC runs it)."""
    if not enabled():
        yield StageRun(None)
        return
    if tracking_uri() is None:
        log.info("MLflow: not logging %s: no wizardcoder checkout (dvc.yaml) in %s or above; "
                 "set MLFLOW_TRACKING_URI to log", run_name or stage, Path.cwd())
        yield StageRun(None)
        return
    if not (nested and in_pipeline()):
        mlflow, _ = open_store(BY_HAND_EXPERIMENT)
        with _standalone_run(mlflow, stage, params, tags, run_name) as handle:
            yield handle
        return
    mlflow, experiment_id = open_store(EXPERIMENT_NAME)
    client = mlflow.MlflowClient()
    path = params_file(params_path)
    shared = pipeline_tags(path)
    exp_name = shared["dvc_exp_name"]
    parent_tags = {**shared, ROLE_TAG: "pipeline", "mlflow.source.name": "dvc.yaml",
                   "mlflow.runName": parent_run_name(exp_name, shared["git_revision"],
                                                     shared["params_sha256"])}
    parent_id = find_or_create_parent(client, experiment_id, parent_tags,
                                      experiment_params(path))
    client.update_run(parent_id, status="RUNNING")
    all_tags = {**shared, ROLE_TAG: "stage", "stage": stage,
                "mlflow.source.name": f"stages/{stage.split('@')[0]}.py", **redact(tags or {})}
    handle = StageRun(mlflow, client, parent_id, group=metric_group(stage))
    status = "FAILED"
    try:
        with mlflow.start_run(run_name=f"{exp_name}/{stage}", tags=all_tags, nested=True,
                              parent_run_id=parent_id):
            if params:
                handle.log_params(params)
            yield handle
        status = "FINISHED"
    finally:
        try:
            client.set_terminated(parent_id, status=status)
        except Exception as exc:  # never hide the stage's own error behind a tracking one
            log.warning("MLflow: could not update the parent run %s: %s", parent_id, exc)
