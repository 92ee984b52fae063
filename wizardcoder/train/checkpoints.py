"""Resumable checkpoints: where they live, what a key means, when one is complete.

DVC deletes a stage's outputs before it reruns, so checkpoints live outside them, under
``train.checkpoint_dir`` (default ``.cache/wizardcoder/train-checkpoints``) in one
subdirectory per **checkpoint key**. The key is a hash of everything that decides what the
run computes: the semantic ``train`` params, the sha256 of the training data, and what the
environment resolves them to: the world size and node count (per-rank optimizer shards, the
effective batch and so the schedule), the DeepSpeed JSON's content hash (not its path), and
the resolved precision (``auto`` is bf16 on one machine and fp32 on another). Cadence
fields (``config.NON_SEMANTIC_FIELDS``) are left out, so logging more often keeps a run.

**Completeness.** The Trainer writes ``trainer_state.json`` from rank 0 only, and each rank
writes its own files (ZeRO optimizer shards, RNG state): rank 0's file says nothing about
rank 5 on another node. So every rank, once its own part of checkpoint N is written, adds
``complete-rank-R`` to it; a checkpoint is complete when all ``world_size`` markers and the
trainer state are there. On resume every rank lists the checkpoints it sees as complete and
all ranks take the newest one in the intersection: a node whose view of shared storage lags
does not make the job resume from two different steps. Multi-node runs need a checkpoint
directory on shared storage; ``check_shared`` proves at start-up that every rank sees the
files rank 0 writes there, instead of failing at the first resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.code_version import code_sha256
from wizardcoder.errors import ConfigError
from wizardcoder.paths import cache_dir, project_root
from wizardcoder.train.config import NON_SEMANTIC_FIELDS, TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"  # written by rank 0 only
RANK_MARKER = "complete-rank-{rank}"
SHARED_PROBE = ".shared-probe"


@dataclass(frozen=True)
class RunLayout:
    """What the config resolves to in this job; part of the checkpoint key."""

    world_size: int = 1
    num_nodes: int = 1
    precision: str = "fp32"
    deepspeed_sha256: str | None = None


def checkpoint_key(config: TrainConfig, data_sha256: str,
                   layout: RunLayout | None = None) -> str:
    """Same computation -> same key; cadence and output-only fields do not count. The train
    code counts: a checkpoint left by a killed run is never resumed by edited code."""
    semantic = {k: v for k, v in dataclasses.asdict(config).items()
                if k not in NON_SEMANTIC_FIELDS}
    blob = json.dumps({"config": semantic, "data": data_sha256,
                       "code": code_sha256("wizardcoder.train.trainer"),
                       "layout": dataclasses.asdict(layout or RunLayout())}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_base(config: TrainConfig) -> Path:
    """``train.checkpoint_dir`` (relative to the project root) or the local cache."""
    if config.checkpoint_dir:
        path = Path(config.checkpoint_dir).expanduser()
        return path if path.is_absolute() else project_root() / path
    return cache_dir() / "train-checkpoints"


def checkpoint_root(config: TrainConfig, data_sha256: str,
                    layout: RunLayout | None = None) -> Path:
    return checkpoint_base(config) / checkpoint_key(config, data_sha256, layout)


def step_of(checkpoint: Path | None) -> int:
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):]) if checkpoint else 0


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every checkpoint directory, newest first."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if path.is_dir() and path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            found.append((int(suffix), path))
    return sorted(found, reverse=True)


def is_complete(path: Path, world_size: int) -> bool:
    return (path / TRAINER_STATE).is_file() and all(
        (path / RANK_MARKER.format(rank=r)).is_file() for r in range(world_size))


def mark_complete(path: Path, rank: int) -> None:
    """This rank's part of checkpoint ``path`` is on disk (called after the Trainer saved)."""
    marker = path / RANK_MARKER.format(rank=rank)
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(f"{os.uname().nodename}\n")
        handle.flush()
        os.fsync(handle.fileno())


def last_checkpoint(root: Path, world_size: int = 1) -> Path | None:
    """The newest checkpoint under ``root`` that this process sees as complete."""
    for _, path in _checkpoints(root):
        if is_complete(path, world_size):
            return path
    return None


def _dist():
    """torch.distributed when a process group of more than one rank is up, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def agreed_checkpoint(root: Path, world_size: int, is_main: bool) -> Path | None:
    """The newest checkpoint that EVERY rank sees as complete (None: start afresh).

    Checkpoint directories newer than it (killed mid-save, or not yet visible everywhere)
    are removed by rank 0, so the Trainer neither rotates them nor saves into them.
    """
    local = {step for step, path in _checkpoints(root) if is_complete(path, world_size)}
    dist = _dist()
    if dist is not None:
        views: list = [None] * dist.get_world_size()
        dist.all_gather_object(views, sorted(local))
        common = set.intersection(*(set(v) for v in views))
        if common != local:
            log.warning("ranks disagree on complete checkpoints (this rank: %s, all: %s)",
                        sorted(local), sorted(common))
        local = common
    chosen = max(local) if local else None
    if is_main:
        for step, path in _checkpoints(root):
            if chosen is None or step > chosen:
                log.warning("removing unusable checkpoint %s (incomplete on some rank)", path)
                shutil.rmtree(path, ignore_errors=True)
    if dist is not None:
        dist.barrier()
    return root / f"{CHECKPOINT_PREFIX}{chosen}" if chosen is not None else None


def check_shared(root: Path, is_main: bool, timeout_s: float = 10.0) -> None:
    """Every rank must see a file rank 0 wrote under ``root`` (shared storage), or fail.

    Without it a multi-node job would save each node's shards to its own disk and could
    never resume; failing at start-up costs seconds, not a lost run.
    """
    dist = _dist()
    if dist is None:
        return
    token = [secrets.token_hex(8) if is_main else None]
    dist.broadcast_object_list(token, src=0)
    probe = root / SHARED_PROBE
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_text(token[0], encoding="utf-8")
    dist.barrier()
    deadline = time.monotonic() + timeout_s
    seen = False
    while not seen and time.monotonic() < deadline:
        try:
            seen = probe.read_text(encoding="utf-8") == token[0]
        except OSError:
            seen = False
        if not seen:
            time.sleep(0.5)
    hosts: list = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, None if seen else os.uname().nodename)
    blind = sorted({h for h in hosts if h})
    if blind:
        raise ConfigError(
            f"train.checkpoint_dir: {root.parent} is not shared storage: ranks on "
            f"{', '.join(blind)} do not see the file rank 0 wrote there; point "
            "train.checkpoint_dir at a directory every node mounts at the same path")


def completion_callback(rank: int):
    """TrainerCallback writing this rank's completeness marker after each save."""
    from transformers import TrainerCallback

    class RankCompletion(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            if path.is_dir():
                mark_complete(path, rank)

    return RankCompletion()
