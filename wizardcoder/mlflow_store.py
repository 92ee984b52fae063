"""Where MLflow logs: the checkout's own sqlite store (``mlflow.db`` at the root, artifacts
in ``mlartifacts/`` recorded relative to the root, so a copied repository reads its own), or
MLFLOW_TRACKING_URI; nothing outside a checkout. Also imports mlflow quietly.

MLflow resolves a relative artifact location against the working directory: the writes
happen at the root (:func:`at_store`), and readers (``mlflow ui``, scripts) start there.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from contextlib import contextmanager
from pathlib import Path

from wizardcoder.paths import cache_dir, project_root

ARTIFACTS_DIR = "mlartifacts"  # under the checkout root, beside mlflow.db


def checkout_root() -> Path | None:
    """The root of the wizardcoder checkout we are in (None: not in one)."""
    root = project_root()
    if os.environ.get("DVC_ROOT") or os.environ.get("WIZARDCODER_ROOT"):
        return root
    return root if (root / "dvc.yaml").exists() or (root / ".dvc").is_dir() else None


def _checkout_store(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI, else the checkout's sqlite store; None outside a checkout."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = checkout_root()
    return _checkout_store(root) if root else None


def local_store_root() -> Path | None:
    """The checkout root when we log to its own store (relative artifact locations)."""
    root = checkout_root()
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI: ours does not count as another.
    if root and os.environ.get("MLFLOW_TRACKING_URI", "") in ("", _checkout_store(root)):
        return root
    return None


def import_mlflow():
    """mlflow, imported without its INFO banners and download progress bars."""
    # MLflow configures its loggers when imported: the level must be in place before.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
    return mlflow


@contextmanager
def file_lock(name: str):
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


def _relative_locations(db: Path, root: Path) -> None:
    """MLflow stores absolute artifact locations; ours are made relative to the checkout
    root (the Default experiment's to ``mlruns/0``), and every run, logged model and model
    version inherits that."""
    with sqlite3.connect(db) as con:
        for exp_id, location in con.execute(
                "SELECT experiment_id, artifact_location FROM experiments").fetchall():
            path = location.removeprefix("file://")
            if not Path(path).is_absolute():
                continue
            if Path(path).is_relative_to(root):
                relative = Path(path).relative_to(root).as_posix()
            elif str(exp_id) == "0":
                relative = "mlruns/0"
            else:
                continue
            con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                        (relative, exp_id))


def open_store(experiment: str):
    """Point mlflow at the store and at ``experiment`` (created if needed); returns
    (mlflow, experiment id)."""
    mlflow = import_mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    root = local_store_root()
    if root is None:  # someone else's store: MLflow's defaults
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            try:
                mlflow.create_experiment(experiment)
            except Exception:  # another process created it first
                if mlflow.get_experiment_by_name(experiment) is None:
                    raise
            found = mlflow.get_experiment_by_name(experiment)
    else:
        # Also serialises creating the tables of a new store, which two processes can race.
        with file_lock("mlflow-experiment.lock"):
            found = mlflow.get_experiment_by_name(experiment)
            if found is None:
                exp_id = mlflow.create_experiment(experiment)
                with sqlite3.connect(root / "mlflow.db") as con:
                    con.execute("UPDATE experiments SET artifact_location = ? "
                                "WHERE experiment_id = ?", (f"{ARTIFACTS_DIR}/{exp_id}", exp_id))
                _relative_locations(root / "mlflow.db", root)
                found = mlflow.get_experiment_by_name(experiment)
    mlflow.set_experiment(experiment_id=found.experiment_id)
    return mlflow, found.experiment_id


@contextmanager
def at_store():
    """Artifacts are written where the store's relative locations point: run MLflow calls
    that write or read artifacts in here, with absolute paths of our own files."""
    root = local_store_root()
    if root is None or Path.cwd().resolve() == root:
        yield
        return
    previous = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(previous)


@contextmanager
def quiet_mlflow():
    """MLflow's advice about things we decide on purpose (an explicit signature with params
    instead of predict() type hints, which cannot declare them; no input example: checking
    it would load the model) stays out of the output."""
    def drop(message, category, *args, **kwargs):
        if not issubclass(category, UserWarning | FutureWarning):
            shown(message, category, *args, **kwargs)

    # Not a filter: MLflow wraps its calls in catch_warnings(simplefilter("once")).
    shown, warnings.showwarning = warnings.showwarning, drop
    try:
        yield
    finally:
        warnings.showwarning = shown
