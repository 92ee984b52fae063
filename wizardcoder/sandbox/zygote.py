"""The sandbox's host side: what this machine allows (root, uids, interpreter), and the zygote
(``worker.py --zygote``), the fork server that starts every worker from a pristine interpreter.
See :mod:`wizardcoder.sandbox.pool` for the layers and the threat model."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.sandbox.cgroup import HINT as CGROUP_HINT
from wizardcoder.sandbox.codec import ProtocolError, decode_value, encode_value

log = logging.getLogger("wizardcoder.sandbox.pool")

WORKER = Path(__file__).with_name("worker.py")
PY_FLAGS = ("-s", "-S", "-P", "-B")  # no site-packages, no user site, no script dir on sys.path
MAX_REPLY_BYTES = 4 << 20
MAX_SLOTS, NOBODY = 64, 65534
_FIRST_UID = 1_600_000_000  # private uids: _FIRST_UID + 64 * (pid % 2**22) + slot
_SYSTEM_DIRS = {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "run", "sbin",
                "sys", "tmp", "usr", "var"}


class ZygoteError(Exception):
    """The zygote did not start or could not fork a worker."""


@dataclass(frozen=True)
class Host:
    """What this machine allows, probed once per process."""

    root: bool
    python: str                 # interpreter the workers run
    uid_base: int | None        # first sandbox uid (root only); None: no uid drop
    shared_uid: bool            # every sample runs as `nobody` (private uids were refused)


_lock = threading.Lock()
_host: tuple[int, Host] | None = None
_zygotes: dict[tuple[int, bool], _Zygote] = {}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("SANDBOX WARNING: %s", message)


def _env(home: str) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
            "HOME": home, "TMPDIR": home}


def _probe(python: str, uid: int) -> bool:
    """Can `uid` run `python` (same major.minor as ours) with the modules the worker needs?"""
    code = "import sys, _json, select, resource, ctypes; print(tuple(sys.version_info[:2]))"
    try:
        done = subprocess.run([python, *PY_FLAGS, "-c", code], user=uid, group=uid,
                              extra_groups=[], env=_env("/"), cwd="/", capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and done.stdout.strip() == str(tuple(sys.version_info[:2]))


def host() -> Host:
    """Probe (once per process) which interpreter and uids the sandbox can use."""
    global _host
    with _lock:
        if _host is not None and _host[0] == os.getpid():
            return _host[1]
        root, python, uid_base = os.geteuid() == 0, sys.executable, None
        if root:
            version = "{}.{}".format(*sys.version_info[:2])
            found = [os.environ.get("WIZARDCODER_SANDBOX_PYTHON"), sys.executable,
                     f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                     shutil.which(f"python{version}", path="/usr/local/bin:/usr/bin:/bin")]
            private = _FIRST_UID + (os.getpid() % (1 << 22)) * MAX_SLOTS
            # The project's interpreter may live where an unprivileged uid cannot read (/root).
            tries = [(p, u) for p in dict.fromkeys(filter(None, found)) for u in (private, NOBODY)]
            python, uid_base = next((t for t in tries if _probe(*t)), (sys.executable, None))
            if uid_base is None:
                _warn_once("uid", "running as root but no interpreter works under an "
                                  "unprivileged uid: samples run as root (namespaces, rlimits "
                                  "and the audit hook still apply)")
        found_host = Host(root, python, uid_base, uid_base == NOBODY)
        _host = (os.getpid(), found_host)
        log.info("sandbox: %s", found_host)
        return found_host


def _dirs_to_hide(python: str) -> list[str]:
    """The project checkout (it may hold benchmark answers) and the current directory, unless
    that would hide the interpreter's library or the temp dirs."""
    keep = [Path(tempfile.gettempdir()).resolve(), Path(python).resolve().parent.parent / "lib"]
    hide: list[str] = []
    for path in (Path(__file__).resolve().parents[2], Path.cwd().resolve()):
        if path.is_dir() and len(path.parts) > 1 and path.parts[1] not in _SYSTEM_DIRS and \
                str(path) not in hide and not any(k == path or path in k.parents for k in keep):
            hide.append(str(path))
    return hide


class _Zygote:
    """Client of the fork server (``worker.py --zygote``): one per process and network
    setting. It forks one outer process per sample and answers with its pid."""

    def __init__(self, h: Host, net: bool):
        python = h.python
        self.lock = threading.Lock()
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # An empty directory that only the zygote's mount namespace mounts on (the new root);
        # on the host it stays an empty directory, removed once the zygote has pivoted.
        new_root = tempfile.mkdtemp(prefix="wc-root-")
        settings = {"net": net, "hide": _dirs_to_hide(python), "root": new_root}
        try:
            self.proc = subprocess.Popen(
                [python, *PY_FLAGS, str(WORKER), "--zygote", str(child.fileno()),
                 json.dumps(settings)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=[child.fileno()], env=_env("/"), cwd="/", start_new_session=True)
        finally:
            child.close()
        self.sock.settimeout(60)
        try:
            self.layers = decode_value(json.loads(self.sock.recv(1 << 12) or b"null"))
        except (OSError, ValueError, ProtocolError) as exc:
            self.close()
            raise ZygoteError(f"the worker zygote did not start: {exc}") from None
        finally:
            try:
                os.rmdir(new_root)
            except OSError:
                pass
        missing = missing_layers(layers_of(self.layers, h, net, per_sample=False), net)
        # (the cgroup layer is the trusted side's: Worker checks it per limit set)
        if missing:  # strict mode refuses before any sample (sandbox.require_isolation)
            _warn_once("layers", "isolation layers unavailable: " +
                       ", ".join(name for name, _ in missing))

    def spawn(self, cfg: dict, fds: list[int]) -> int:
        with self.lock:
            socket.send_fds(self.sock, [encode_value(cfg, 1 << 16).encode()], fds)
            reply = self.sock.recv(256).decode()
        if not reply.isdigit():
            raise ZygoteError(f"the worker zygote failed: {reply or 'EOF'}")
        return int(reply)

    def close(self) -> None:
        self.sock.close()  # the zygote exits when its socket closes
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# Isolation layers (see sandbox.py): each with what to do when it is unavailable.
_NAMESPACES = ("needs root, or unprivileged user namespaces; in a container, allow unshare and "
               "mount (e.g. docker --cap-add SYS_ADMIN --security-opt seccomp=unconfined, or "
               "an unprivileged user with user namespaces enabled)")
LAYER_HINTS = {
    "user_ns": "unprivileged user namespaces are disabled: enable them with `sysctl -w "
               "user.max_user_namespaces=15000` (and `sysctl -w "
               "kernel.unprivileged_userns_clone=1` on kernels that have it; on Ubuntu 24.04 "
               "also `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`), or run the "
               "scorer as root",
    "mount_ns": f"no mount namespace: {_NAMESPACES}",
    "ipc_ns": f"no IPC namespace: {_NAMESPACES}",
    "net_ns": f"no network namespace: {_NAMESPACES}",
    "pid_ns": f"no PID namespace: {_NAMESPACES}",
    "minimal_root": "the minimal root (tmpfs + read-only bind mounts + pivot_root) could not "
                    "be built",
    "uid_separation": "as root, no interpreter runs under an unprivileged uid: install a "
                      "python{ver} that every user can run (e.g. Debian's python3) or set "
                      "WIZARDCODER_SANDBOX_PYTHON to one, and allow setuid to unprivileged uids",
    "seccomp": "no seccomp system-call filter: it needs x86_64 and a kernel with "
               "CONFIG_SECCOMP_FILTER (Linux >= 3.17); a container runtime's own seccomp "
               "profile lets a process add its filter",
    "memory_bound": CGROUP_HINT,
}


def memory_bound(status: dict, syscalls: str) -> str | bool:
    """What bounds a sample's memory as a whole: its cgroup, or (a Python sample, which the
    seccomp filter keeps to one process) its address-space limit plus its tmpfs; False: only
    per process."""
    if status.get("cgroup"):
        return f"cgroup {status['cgroup']} per sample (memory and processes)"
    if status.get("seccomp") and syscalls == "python":
        return "one process (seccomp) under its address-space limit, plus its tmpfs size"
    return False


def layers_of(status: dict, h: Host, net: bool, per_sample: bool = True,
              syscalls: str | None = None) -> dict:
    """The isolation layers, as booleans (``None``: not needed here), from a worker's report
    (``per_sample`` False: the zygote's report only; the per-sample layers are then enforced by
    the worker itself whenever the minimal root is active)."""
    minimal = bool(status.get("minimal_root"))
    syscalls = syscalls or status.get("syscalls") or "python"
    return {
        "user_ns": None if h.root else bool(status.get("user_ns")),
        "mount_ns": bool(status.get("mount_ns")),
        "pid_ns": bool(status.get("pid")) if per_sample else minimal,
        # IPC and network namespaces of the sample's own, unshared with its PID namespace
        "net_ns": (bool(status.get("net_sample")) if per_sample else
                   bool(status.get("net")) and minimal) if net else None,
        "ipc_ns": bool(status.get("ipc")) if per_sample else
        bool(status.get("ipc_ns")) and minimal,
        "seccomp": f"{syscalls} profile" if status.get("seccomp") else False,
        "cgroup": status.get("cgroup") or None,
        "memory_bound": memory_bound(status, syscalls),
        "minimal_root": minimal and (bool(status.get("tmp_rw")) if per_sample else True),
        "uid_separation": (h.uid_base is not None) if h.root else bool(status.get("user_ns")),
        "uid": ("private uid per sample" if not h.shared_uid else "nobody, shared")
        if h.root and h.uid_base is not None else
        "own uid in a user namespace, no capabilities" if not h.root and status.get("user_ns")
        else "none: the scorer's own uid",
    }


def missing_layers(layers: dict, net: bool) -> list[tuple[str, str]]:
    """(layer, how to enable it) for every required layer that is not active."""
    version = "{}.{}".format(*sys.version_info[:2])
    return [(name, hint.replace("{ver}", version)) for name, hint in LAYER_HINTS.items()
            if layers.get(name) is False and (name != "net_ns" or net)]


def zygote_for(net: bool) -> _Zygote:
    """This process's zygote for ``net`` (network namespace or not), started on first use."""
    h = host()
    with _lock:
        key = (os.getpid(), net)
        if key not in _zygotes or _zygotes[key].proc.poll() is not None:
            _zygotes[key] = _Zygote(h, net)
        return _zygotes[key]


@atexit.register
def close_zygotes() -> None:
    for key, zygote in list(_zygotes.items()):
        if key[0] == os.getpid():
            zygote.close()
        del _zygotes[key]
