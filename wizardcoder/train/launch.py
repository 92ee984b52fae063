"""Process layout: the DeepSpeed launcher, multi-node rendezvous and environment forwarding.

``train.launcher: deepspeed`` makes the stage re-execute itself under DeepSpeed's runner
(``deepspeed/launcher/runner.py``). On several nodes that runner starts the workers over
ssh (pdsh by default), and three things of its behaviour matter here:

- **Environment.** Remote workers get only the variables whose names start with ``MLFLOW``,
  ``PYTHON``, ``MV2``, ``UCX`` (and ``NCCL`` on CUDA), plus the ``KEY=VALUE`` lines of the
  file named by ``DS_ENV_FILE`` (default ``.deepspeed_env``), looked up in ``~`` and in the
  launch directory. Each line is split once on ``=``; blank lines or comments make the
  runner crash, and values are pasted into a remote shell inside double quotes. We write
  such a file (``forwarded_env``) and point ``DS_ENV_FILE`` at it by absolute path
  (``os.path.join(dir, absolute)`` is that path); the lines of the user's own
  ``.deepspeed_env`` files are merged in, since DeepSpeed would no longer read them.
  Secret-looking variables are never written: give each node its own credentials.
- **Master address.** Without ``--master_addr`` the runner asks the first host of the
  hostfile for ``hostname -I`` over ssh; we pass that first host's name directly.
- **Master port.** Probing a free port on the launching host says nothing about the first
  host, which may be another machine: with a hostfile the port is ``train.master_port`` or
  DeepSpeed's default 29500, never probed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import sys
from pathlib import Path

from wizardcoder.credentials import without_secrets
from wizardcoder.errors import ConfigError
from wizardcoder.paths import cache_dir, project_root
from wizardcoder.train.config import TrainConfig

log = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500  # torch.distributed / DeepSpeed default
DS_ENV_FILE = "DS_ENV_FILE"
DS_ENV_DEFAULT_NAME = ".deepspeed_env"
HOSTFILE_LINE = re.compile(r"^(\S+)\s+slots=(\d+)\s*$")  # DeepSpeed's own format

# Variables the workers need and DeepSpeed's prefix rules do not forward.
FORWARDED_NAMES = (
    "WIZARDCODER_CACHE_DIR", "WIZARDCODER_ROOT", "WIZARDCODER_MLFLOW",
    "WIZARDCODER_MLFLOW_EXPERIMENT", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV",
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_CACHE", "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "TORCH_EXTENSIONS_DIR",
    "PYTORCH_CUDA_ALLOC_CONF", "CUDA_DEVICE_MAX_CONNECTIONS", "TRITON_CACHE_DIR",
)
# Characters a double-quoted remote shell word would expand or end on.
UNSAFE_VALUE = re.compile(r'["$`\\\n\r]')


# --- single process ---------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_process_env(config: TrainConfig) -> dict[str, str]:
    """Rendezvous variables DeepSpeed needs when no launcher set them.

    Without them deepspeed.init_distributed falls back to MPI discovery and fails
    importing mpi4py. Existing values (a launcher's) are never overwritten.
    """
    wanted = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(config.master_port or free_port())}
    added = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(added)
    return added


def under_launcher() -> bool:
    """True inside a process started by the deepspeed/torchrun launcher."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_layout() -> tuple[int, int]:
    """(world size, nodes) of this process's job, from the launcher's variables.

    DeepSpeed's launch sets CROSS_SIZE (nodes); torchrun sets LOCAL_WORLD_SIZE.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if os.environ.get("CROSS_SIZE"):
        return world, int(os.environ["CROSS_SIZE"])
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or world)
    return world, max(1, world // max(local, 1))


# --- hostfile and rendezvous ------------------------------------------------------------

def resolve_hostfile(config: TrainConfig) -> Path | None:
    if not config.hostfile:
        return None
    path = Path(config.hostfile).expanduser()
    if not path.is_absolute():
        path = project_root() / path
    return path


def read_hostfile(path: Path) -> list[tuple[str, int]]:
    """``[(host, slots)]`` in file order; errors name the file and line."""
    if not path.is_file():
        raise ConfigError(f"train.hostfile: {path} does not exist")
    hosts: list[tuple[str, int]] = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = HOSTFILE_LINE.match(line)
        if not match:
            raise ConfigError(f"{path}:{lineno}: expected 'HOST slots=N', got {line!r}")
        if any(h == match.group(1) for h, _ in hosts):
            raise ConfigError(f"{path}:{lineno}: host {match.group(1)!r} listed twice")
        hosts.append((match.group(1), int(match.group(2))))
    if not hosts:
        raise ConfigError(f"{path}: no 'HOST slots=N' line")
    return hosts


def rendezvous(config: TrainConfig) -> tuple[str | None, int]:
    """(master address, master port) for the launcher.

    With a hostfile: the first host (DeepSpeed numbers it node 0) and the configured or
    default port. Without one everything runs here: no address, any free local port.
    """
    hostfile = resolve_hostfile(config)
    if hostfile is None:
        return None, config.master_port or free_port()
    hosts = read_hostfile(hostfile)
    if len(hosts) < config.num_nodes:
        raise ConfigError(f"train.num_nodes: {config.num_nodes} nodes asked for, but "
                          f"{hostfile} lists {len(hosts)}")
    return hosts[0][0], config.master_port or DEFAULT_MASTER_PORT


def deepspeed_launch_command(config: TrainConfig, argv: list[str],
                             module: str | None = None) -> list[str]:
    """``deepspeed ... <script or --module m> args``; --no_local_rank keeps argv unchanged.

    ``argv`` is ``[script, *args]``, or with ``module`` the module's arguments only. Each
    worker reads its rank from LOCAL_RANK, so the stage's argument parser needs no
    ``--local_rank`` option.
    """
    addr, port = rendezvous(config)
    cmd = ["deepspeed", "--no_local_rank", "--num_nodes", str(config.num_nodes)]
    if config.num_gpus is not None:
        cmd += ["--num_gpus", str(config.num_gpus)]
    hostfile = resolve_hostfile(config)
    if hostfile is not None:
        cmd += ["--hostfile", str(hostfile), "--master_addr", addr]
    cmd += ["--master_port", str(port)]
    if module:
        cmd += ["--module", module, *argv]
    else:
        cmd += [argv[0], *argv[1:]]
    return cmd


# --- environment forwarding -------------------------------------------------------------

def _user_env_lines(environ: dict[str, str], cwd: Path) -> list[tuple[str, str]]:
    """The entries DeepSpeed itself would have read (``~`` and the launch directory)."""
    name = environ.get(DS_ENV_FILE, DS_ENV_DEFAULT_NAME)
    entries: list[tuple[str, str]] = []
    for directory in (Path(os.path.expanduser("~")), cwd):
        path = directory / name
        if not path.is_file():
            continue
        for raw in path.read_text(encoding="utf-8").splitlines():
            if "=" in raw:
                key, value = raw.split("=", 1)
                entries.append((key.strip(), value.strip()))
    return entries


def forwarded_env(environ: dict[str, str] | None = None,
                  cwd: Path | None = None) -> dict[str, str]:
    """The variables to write into the DS_ENV_FILE: ours, then the user's (theirs win)."""
    environ = without_secrets(os.environ if environ is None else environ)
    out: dict[str, str] = {}
    for name in FORWARDED_NAMES:
        value = environ.get(name)
        if value is None:
            continue
        if UNSAFE_VALUE.search(value):
            log.warning("not forwarding %s to other nodes: its value has quotes, $, "
                        "backslashes or newlines", name)
            continue
        out[name] = value
    for key, value in _user_env_lines(environ, cwd or Path.cwd()):
        out[key] = value
    return without_secrets(out)


def write_deepspeed_env(path: Path, env: dict[str, str]) -> Path:
    """``KEY=VALUE`` lines, nothing else (DeepSpeed's parser takes no blanks or comments)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())), encoding="utf-8")
    os.replace(tmp, path)
    return path


def launcher_environment(config: TrainConfig) -> dict[str, str]:
    """Environment for the launcher process: DS_ENV_FILE -> our forwarded variables."""
    env = dict(os.environ)
    if resolve_hostfile(config) is None:
        return env  # one node: the workers inherit this environment as is
    path = write_deepspeed_env(cache_dir() / "deepspeed" / "deepspeed_env", forwarded_env())
    env[DS_ENV_FILE] = str(path.resolve())
    return env


def maybe_relaunch(config: TrainConfig, argv: list[str] | None = None,
                   module: str | None = None) -> None:
    """With ``launcher: deepspeed``, replace this process by the deepspeed launcher.

    Call it first thing in the stage (before heavy imports); it returns normally when no
    relaunch is needed, including inside the launched workers.
    """
    if config.launcher != "deepspeed" or under_launcher():
        return
    if shutil.which("deepspeed") is None:
        raise ConfigError("train.launcher: 'deepspeed' needs the deepspeed command on PATH")
    cmd = deepspeed_launch_command(config, list(argv if argv is not None else sys.argv),
                                   module=module)
    env = launcher_environment(config)
    log.info("relaunching under DeepSpeed: %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)
