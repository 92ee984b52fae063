"""Cluster-facing parts of training that one machine can check for real.

The checkpoint key (what a resumed run must share with the run that saved), the DeepSpeed
launcher command and the ``.deepspeed_env`` file it forwards to remote nodes, the master
address from a hostfile, and the ranks' agreement on a complete checkpoint, run in a real
two-process gloo group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_training import outputs, tiny_config
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError
from wizardcoder.train import TrainConfig, run_training
from wizardcoder.train.checkpoints import (
    RANK_MARKER,
    TRAINER_STATE,
    RunLayout,
    checkpoint_key,
    last_checkpoint,
    mark_complete,
)
from wizardcoder.train.config import deepspeed_config_sha256
from wizardcoder.train.launch import (
    DEFAULT_MASTER_PORT,
    deepspeed_launch_command,
    forwarded_env,
    launcher_environment,
    read_hostfile,
    world_layout,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(path))
    return path


# --- the checkpoint key ------------------------------------------------------------------

@pytest.mark.parametrize("layout", [
    RunLayout(world_size=8), RunLayout(num_nodes=2), RunLayout(precision="bf16"),
    RunLayout(deepspeed_sha256="0" * 64),
], ids=["world_size", "num_nodes", "precision", "deepspeed_json"])
def test_each_part_of_the_layout_changes_the_key(layout):
    config = TrainConfig()
    assert checkpoint_key(config, "abc", layout) != checkpoint_key(config, "abc", RunLayout())


@pytest.mark.parametrize("field, value", [
    ("logging_steps", 9), ("save_steps", 7), ("save_total_limit", 5),
    ("keep_checkpoints", True), ("checkpoint_dir", "/shared/ckpt"), ("eval_steps", 0),
    ("save_dtype", "float32"), ("peak_tflops", 100.0), ("master_port", 29999),
    ("card_license", "mit"),
])
def test_cadence_and_output_fields_keep_the_key(field, value):
    assert checkpoint_key(TrainConfig(), "abc") == \
        checkpoint_key(TrainConfig(**{field: value}), "abc")


def test_deepspeed_json_is_keyed_by_content_not_path(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "moved.json", tmp_path / "edited.json"
    a.write_text('{"zero_optimization": {"stage": 2}, "bf16": {"enabled": "auto"}}')
    b.write_text('{\n  "bf16": {"enabled": "auto"},\n  "zero_optimization": {"stage": 2}\n}\n')
    c.write_text('{"zero_optimization": {"stage": 3}, "bf16": {"enabled": "auto"}}')
    assert deepspeed_config_sha256(a) == deepspeed_config_sha256(b)
    assert deepspeed_config_sha256(a) != deepspeed_config_sha256(c)
    key = {p: checkpoint_key(TrainConfig(deepspeed=str(p)), "abc",
                             RunLayout(deepspeed_sha256=deepspeed_config_sha256(p)))
           for p in (a, b, c)}
    assert key[a] == key[b] != key[c]


def test_a_checkpoint_of_another_precision_is_not_resumed(tiny_model_dir, train_jsonl,
                                                          tmp_path, cache):
    """A real kept checkpoint: the same run resumes it, a bf16 run (another key) does not."""
    config = tiny_config(tiny_model_dir, max_steps=2, save_steps=2, keep_checkpoints=True)
    first = run_training(config, train_jsonl, **outputs(tmp_path / "a"))
    assert first["resumed_from_step"] == 0
    assert len(list(cache.glob("train-checkpoints/*/checkpoint-2"))) == 1
    bf16 = run_training(tiny_config(tiny_model_dir, max_steps=2, save_steps=2,
                                    keep_checkpoints=True, precision="bf16"),
                        train_jsonl, **outputs(tmp_path / "b"))
    assert bf16["resumed_from_step"] == 0 and bf16["precision"] == "bf16"
    assert len(list(cache.glob("train-checkpoints/*/checkpoint-2"))) == 2  # two keys
    again = run_training(config, train_jsonl, **outputs(tmp_path / "c"))
    assert again["resumed_from_step"] == 2


def test_checkpoint_dir_param_moves_the_checkpoints(tiny_model_dir, train_jsonl, tmp_path,
                                                    cache):
    shared = tmp_path / "shared"
    config = tiny_config(tiny_model_dir, max_steps=2, save_steps=1, keep_checkpoints=True,
                         checkpoint_dir=str(shared))
    run_training(config, train_jsonl, **outputs(tmp_path))
    (root,) = shared.iterdir()
    assert sorted(p.name for p in root.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (root / "checkpoint-2" / RANK_MARKER.format(rank=0)).is_file()
    assert not cache.joinpath("train-checkpoints").exists()


def test_completeness_needs_every_ranks_marker(tmp_path):
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / TRAINER_STATE).write_text("{}")
    mark_complete(ckpt, 0)
    assert last_checkpoint(tmp_path, world_size=1) == ckpt
    assert last_checkpoint(tmp_path, world_size=2) is None  # rank 1 never finished
    mark_complete(ckpt, 1)
    assert last_checkpoint(tmp_path, world_size=2) == ckpt


# --- launcher, hostfile, environment forwarding ------------------------------------------

def write_hostfile(path: Path) -> Path:
    path.write_text("# two nodes\nnode-a slots=8\n\nnode-b slots=8\n", encoding="utf-8")
    return path


def test_multinode_command_takes_master_from_the_hostfile(tmp_path):
    hostfile = write_hostfile(tmp_path / "hostfile")
    config = TrainConfig(deepspeed="configs/deepspeed/zero3.json", launcher="deepspeed",
                         num_nodes=2, num_gpus=8, hostfile=str(hostfile))
    cmd = deepspeed_launch_command(config, ["train", "--params", "params.yaml"],
                                   module="wizardcoder")
    assert cmd == ["deepspeed", "--no_local_rank", "--num_nodes", "2", "--num_gpus", "8",
                   "--hostfile", str(hostfile), "--master_addr", "node-a",
                   "--master_port", str(DEFAULT_MASTER_PORT),
                   "--module", "wizardcoder", "train", "--params", "params.yaml"]
    pinned = TrainConfig(**{**config.__dict__, "master_port": 29601})
    assert deepspeed_launch_command(pinned, ["x.py"])[-3:] == ["--master_port", "29601", "x.py"]


def test_hostfile_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "hostfile"
    bad.write_text("node-a slots=8\nnode-b 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"hostfile:2: expected 'HOST slots=N'"):
        read_hostfile(bad)
    hostfile = write_hostfile(tmp_path / "two")
    config = TrainConfig(deepspeed="configs/deepspeed/zero2.json", launcher="deepspeed",
                         num_nodes=3, hostfile=str(hostfile))
    with pytest.raises(ConfigError, match=r"train\.num_nodes: 3 nodes .* lists 2"):
        deepspeed_launch_command(config, ["x.py"])
    with pytest.raises(ConfigError, match=r"train\.num_nodes"):
        from_dict(TrainConfig, {"num_nodes": 2, "deepspeed": "configs/deepspeed/zero2.json",
                                "launcher": "deepspeed"}, "train")


def test_deepspeed_env_forwards_what_workers_need_and_no_secret(tmp_path, monkeypatch):
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    (home / ".deepspeed_env").write_text("NCCL_SOCKET_IFNAME=eth0\nHF_TOKEN=hf_xyz\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(project)
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", "/shared/cache")
    monkeypatch.setenv("HF_HOME", "/shared/hf home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DVC_ROOT", "/shared/repo")
    monkeypatch.setenv("OMP_NUM_THREADS", "$(rm -rf ~)")  # would run in the remote shell
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.delenv("DS_ENV_FILE", raising=False)
    env = forwarded_env()
    expected = {"WIZARDCODER_CACHE_DIR": "/shared/cache", "HF_HOME": "/shared/hf home",
                "HF_HUB_OFFLINE": "1", "DVC_ROOT": "/shared/repo", "NCCL_SOCKET_IFNAME": "eth0"}
    assert {k: env.get(k) for k in expected} == expected
    assert not {"OPENAI_API_KEY", "HF_TOKEN", "OMP_NUM_THREADS"} & set(env)

    hostfile = write_hostfile(tmp_path / "hostfile")
    config = TrainConfig(deepspeed="configs/deepspeed/zero2.json", launcher="deepspeed",
                         num_nodes=2, hostfile=str(hostfile))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    launch_env = launcher_environment(config)
    path = Path(launch_env["DS_ENV_FILE"])
    assert path.is_absolute() and path.is_file()
    text = path.read_text()
    # DeepSpeed's reader: every line KEY=VALUE, no blanks or comments
    lines = text.splitlines()
    assert lines and all("=" in line and not line.startswith("#") for line in lines)
    parsed = dict(line.split("=", 1) for line in lines)
    assert parsed["WIZARDCODER_CACHE_DIR"] == str(tmp_path / "cache")
    assert "secret" not in text and "hf_xyz" not in text and "rm -rf" not in text
    # DeepSpeed joins ~ and '.' with the name: an absolute name is that path
    assert os.path.join(os.path.expanduser("~"), launch_env["DS_ENV_FILE"]) == str(path)


def test_one_node_needs_no_env_file(monkeypatch):
    monkeypatch.delenv("DS_ENV_FILE", raising=False)
    config = TrainConfig(deepspeed="configs/deepspeed/zero2.json", launcher="deepspeed")
    assert "DS_ENV_FILE" not in launcher_environment(config)


def test_world_layout_from_launcher_variables(monkeypatch):
    for name in ("WORLD_SIZE", "CROSS_SIZE", "LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert world_layout() == (1, 1)
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("CROSS_SIZE", "2")  # deepspeed.launcher.launch
    assert world_layout() == (16, 2)
    monkeypatch.delenv("CROSS_SIZE")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun
    assert world_layout() == (16, 4)


# --- two real ranks ----------------------------------------------------------------------

RANKS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch.distributed as dist
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from wizardcoder.errors import ConfigError
    from wizardcoder.train.checkpoints import agreed_checkpoint, check_shared
    for n, roots in enumerate(json.loads(sys.argv[1])):
        dist.barrier()  # the pair before this one is done on both ranks
        removed = not (Path(roots[0]) / "checkpoint-4").exists()
        root = Path(roots[rank])
        try:
            check_shared(root, rank == 0, timeout_s=1.0)
            shared = "shared"
        except ConfigError as exc:
            shared = str(exc)
        chosen = agreed_checkpoint(root, 2, rank == 0)
        print("RESULT", json.dumps({"pair": n, "rank": rank, "shared": shared,
                                    "removed_before": removed,
                                    "chosen": chosen.name if chosen else None}), flush=True)
    dist.destroy_process_group()
""")


def run_two_ranks(pairs: list[list[Path]]) -> list[dict]:
    """Two real ranks (gloo) run each pair of roots (rank 0's, rank 1's) in turn; per pair,
    {rank: result, "removed_before": whether rank 0's checkpoint-4 was gone as it began}."""
    port = str(29000 + os.getpid() % 1000)
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", RANKS_SCRIPT,
             json.dumps([[str(r) for r in roots] for roots in pairs])],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results: list[dict] = [{} for _ in pairs]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        for line in out.splitlines():
            if line.startswith("RESULT"):
                row = json.loads(line.split("RESULT", 1)[1])
                results[row["pair"]][row["rank"]] = row
                if row["rank"] == 0:
                    results[row["pair"]]["removed_before"] = row["removed_before"]
    assert all(0 in r and 1 in r for r in results), results
    return results


def make_checkpoint(root: Path, step: int, ranks: list[int]) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / TRAINER_STATE).write_text("{}")
    for rank in ranks:
        mark_complete(path, rank)
    return path


def test_ranks_agree_on_the_newest_checkpoint_all_of_them_see(tmp_path):
    """Rank 1's view lags (checkpoint-4 lacks its marker there): both resume from 2, and
    rank 0 removes the checkpoint not every rank could load. A second pair of roots that
    are not the same directory fails the shared-storage check on both ranks."""
    shared = tmp_path / "shared"
    make_checkpoint(shared, 2, [0, 1])
    make_checkpoint(shared, 4, [0, 1])
    lagging = tmp_path / "lagging-view"
    make_checkpoint(lagging, 2, [0, 1])
    make_checkpoint(lagging, 4, [0])
    # One process per rank runs both pairs, one after the other (a barrier between them).
    results, again = run_two_ranks([[shared, lagging], [shared, shared]])
    assert results[0]["chosen"] == results[1]["chosen"] == "checkpoint-2"
    assert not results["removed_before"]
    assert again["removed_before"]  # checkpoint-4 was gone before the second pair began
    assert not (shared / "checkpoint-4").exists()
    assert all("is not shared storage" in results[r]["shared"] for r in (0, 1))

    results = again
    assert results[0]["shared"] == results[1]["shared"] == "shared"
    assert results[0]["chosen"] == results[1]["chosen"] == "checkpoint-2"
