"""A reproduced pipeline workspace for the slow tests: a copy of this repository (tracked
and new files) as a fresh git + DVC repo in a temp dir, its params shrunk to the smallest
settings (``TINY``: 2 seeds, 1 round, 1 training step, 2 HumanEval tasks).

``tests/conftest.py`` builds one per session (fixture ``pipeline``, read only) and hands each
test that changes a workspace its own copy (``workspace``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "seed": {"limit": 2},
    "rounds": {"r1": "data/seed.jsonl"},
    "llm": {"max_in_flight": 1},
    "evolve": {"evolve_max_tokens": 48, "answer_max_tokens": 64},
    "train": {"max_steps": 1, "max_length": 128, "per_device_train_batch_size": 1},
    "generate": {"limit": 2, "max_new_tokens": 32, "batch_size": 2},
    "score": {"workers": 1},
    "select": {"dev_limit": 2},
    "tracking": {"register_model": "wizardcoder-sft"},
}


def run(cmd, cwd, env, check=True, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, shell=isinstance(cmd, str))
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd!r} failed ({proc.returncode}):\n{output[-6000:]}")
    return output


def can_isolate_network() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"],
                           capture_output=True)
    return probe.returncode == 0


def make_repo(tmp: Path) -> tuple[Path, dict]:
    repo = tmp / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            dst = repo / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in TINY.items():
        if section == "rounds":
            params["rounds"] = values
        else:
            params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PYTHONPATH": str(repo)}
    for key in ("DVC_ROOT", "WIZARDCODER_ROOT", "WIZARDCODER_CACHE_DIR", "MLFLOW_TRACKING_URI",
                "WIZARDCODER_MLFLOW"):
        env.pop(key, None)
    run("git init -q && git add -A && git commit -qm init", repo, env)
    return repo, env


def copy_workspace(repo: Path, env: dict, dst: Path) -> tuple[Path, dict]:
    """A private copy of a reproduced workspace at ``dst``: git, DVC cache and state, MLflow
    store. DVC's cache files are read-only and a stage's outputs are deleted before it reruns,
    so those (the big model files) are hard links; everything else is copied, and the MLflow
    store's absolute paths (artifact locations) are moved to the copy."""
    def copy(src: str, target: str) -> None:
        rel = Path(src).relative_to(repo).parts
        if rel[:2] == (".dvc", "cache") or rel[0] == "models":
            os.link(src, target)
        else:
            shutil.copy2(src, target)

    shutil.copytree(repo, dst, symlinks=True, copy_function=copy)
    db = dst / "mlflow.db"
    if db.exists():
        with sqlite3.connect(db) as con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")]
            for table in tables:
                for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                    name, kind = column[1], column[2].upper()
                    if "CHAR" in kind or "TEXT" in kind:
                        con.execute(f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) '
                                    f'WHERE "{name}" LIKE ?', (str(repo), str(dst),
                                                               f"%{repo}%"))
    return dst, {**env, "PYTHONPATH": str(dst)}
