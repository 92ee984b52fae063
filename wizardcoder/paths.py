"""Where things live: the project root (also inside queued `dvc exp` temp copies), caches."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The user's repository root.

    Queued ``dvc exp run`` executes stages in a temporary copy and sets DVC_ROOT to the
    original root; stores that must outlive the copy (MLflow, the LLM request cache) use it.
    """
    env = os.environ.get("DVC_ROOT") or os.environ.get("WIZARDCODER_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".dvc").is_dir():
            return candidate
    return here


def cache_dir() -> Path:
    """Durable caches outside DVC outputs, so a killed stage keeps them."""
    env = os.environ.get("WIZARDCODER_CACHE_DIR")
    path = Path(env) if env else project_root() / ".cache" / "wizardcoder"
    path.mkdir(parents=True, exist_ok=True)
    return path
