"""A cgroup per sample (trusted side): memory (anonymous, shared and tmpfs pages of all its
processes together, kernel memory included) and the number of its processes bounded per
sample, not per process.

Where: cgroup v2 with the ``memory`` and ``pids`` controllers available to this process's own
cgroup (as root, or a delegated cgroup, e.g. ``systemd-run --user --scope -p Delegate=yes``),
else cgroup v1's ``memory`` and ``pids`` hierarchies, writable as root. The scorer creates
``wizardcoder-<pid>`` under its own cgroup and one child per sample; the child's
``cgroup.procs`` is opened here and passed to the worker, whose inner process writes ``0``
(itself) to it before anything else, so that the sample and every process it starts are
accounted there. After the sample (its PID namespace is gone by then) the peak usage and OOM
kills are read and the cgroup removed; ``wizardcoder-<pid>`` goes at exit.

:func:`support` says what this machine offers (once per process), :func:`create` makes one.
API (the Python workers use it in ``pool.py``; any other launcher, e.g. MultiPL-E's, the same)::

    sample = cgroup.create(memory_bytes, max_procs)   # None: cgroup.support().reason says why
    # pass sample.fds to the child (pass_fds / SCM_RIGHTS); before anything else it does
    #     for fd in fds: os.write(fd, b"0"); os.close(fd)
    usage = sample.destroy()   # after its processes are gone: {"memory_peak_mb", "oom_kills"}
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import time
from dataclasses import dataclass

_lock = threading.Lock()
_support: tuple[int, Support] | None = None
_counter = itertools.count()
HINT = ("no cgroup to bound a sample's memory and processes: run the scorer as root with "
        "cgroup v1's memory and pids controllers mounted or cgroup v2 with memory and pids "
        "enabled, or, as another user, in a delegated cgroup v2 of its own (e.g. `systemd-run "
        "--user --scope -p Delegate=yes wizardcoder score ...`); or score Python samples only, "
        "whose seccomp profile allows no second process (the address-space limit then bounds "
        "the sample)")


@dataclass(frozen=True)
class Support:
    """What this process can use: ``version`` "v2", "v1" or None (``reason`` says why)."""

    version: str | None
    bases: tuple[str, ...] = ()   # v2: one directory; v1: (memory, pids)
    reason: str = ""


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup file system."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fstype, _, options = (right.split() + ["", "", ""])[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((left.split()[4], fstype, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    paths = {}
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _remove_stale(parent: str) -> None:
    """``wizardcoder-<pid>`` trees left by scorers that died (their samples are gone); only
    those untouched for an hour, as a live scorer in another PID namespace looks dead here."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid, tree = name.rpartition("-")[2], os.path.join(parent, name)
        try:
            if not name.startswith("wizardcoder-") or not pid.isdigit() or \
                    os.path.exists(f"/proc/{pid}") or \
                    time.time() - os.stat(tree).st_mtime < 3600:
                continue
            children = [os.path.join(tree, c) for c in os.listdir(tree)]
        except OSError:
            continue
        for child in [c for c in children if os.path.isdir(c)] + [tree]:
            try:
                os.rmdir(child)
            except OSError:
                pass


def _v2(mount: str, own: str) -> tuple[str | None, str]:
    """A directory whose children get memory and pids controllers, or (None, why)."""
    here = os.path.normpath(mount + own)
    if not {"memory", "pids"} <= set(_read(f"{here}/cgroup.controllers").split()):
        return None, f"cgroup v2 at {mount}: memory and pids controllers not available in {own}"
    base = f"{here}/wizardcoder-{os.getpid()}"
    try:
        if not {"memory", "pids"} <= set(_read(f"{here}/cgroup.subtree_control").split()):
            try:
                _write(f"{here}/cgroup.subtree_control", "+memory +pids")
            except OSError:  # processes in `here` (no internal processes in v2): if only
                procs = _read(f"{here}/cgroup.procs").split()  # this one, move it to a leaf
                if procs != [str(os.getpid())]:
                    raise
                leaf = f"{here}/wizardcoder-scorer-{os.getpid()}"
                os.makedirs(leaf, exist_ok=True)
                _write(f"{leaf}/cgroup.procs", "0")
                _write(f"{here}/cgroup.subtree_control", "+memory +pids")
        _remove_stale(here)
        os.makedirs(base, exist_ok=True)
        _write(f"{base}/cgroup.subtree_control", "+memory +pids")
    except OSError as exc:
        return None, f"cgroup v2 at {here}: {exc}"
    return base, ""


def _v1(mounts, own) -> tuple[tuple[str, str] | None, str]:
    bases = []
    for controller in ("memory", "pids"):
        mount = next((m for m, t, opts in mounts if t == "cgroup" and controller in opts), None)
        if mount is None or controller not in own:
            return None, f"cgroup v1: no {controller} hierarchy mounted"
        base = os.path.normpath(f"{mount}{own[controller]}/wizardcoder-{os.getpid()}")
        _remove_stale(os.path.dirname(base))
        try:
            os.makedirs(base, exist_ok=True)
        except OSError as exc:
            return None, f"cgroup v1 {controller}: {exc}"
        bases.append(base)
    return (bases[0], bases[1]), ""


def support() -> Support:
    """Probe once per process which cgroup version can hold samples."""
    global _support
    with _lock:
        if _support is not None and _support[0] == os.getpid():
            return _support[1]
        try:
            mounts, own = _mounts(), _own_paths()
        except OSError as exc:
            found = Support(None, reason=f"cannot read this process's cgroups: {exc}")
        else:
            reasons = []
            found = None
            v2 = next((m for m, t, _ in mounts if t == "cgroup2"), None)
            if v2 is not None and "" in own:
                base, why = _v2(v2, own[""])
                if base:
                    found = Support("v2", (base,))
                reasons.append(why)
            if found is None:
                bases, why = _v1(mounts, own)
                found = Support("v1", bases) if bases else None
                reasons.append(why)
            found = found or Support(None, reason="; ".join(r for r in reasons if r))
        _support = (os.getpid(), found)
        return found


@atexit.register
def _remove_bases() -> None:
    if _support is not None and _support[0] == os.getpid():
        for base in _support[1].bases:
            try:
                os.rmdir(base)
            except OSError:
                pass


class SampleCgroup:
    """One sample's cgroup(s): ``fds`` to pass to the worker; :meth:`destroy` after it."""

    def __init__(self, found: Support, memory_bytes: int, max_procs: int):
        self.version, self.dirs, self.fds = found.version, [], []
        name = f"s{next(_counter)}"
        try:
            if found.version == "v2":
                d = f"{found.bases[0]}/{name}"
                os.mkdir(d)
                self.dirs.append(d)
                _write(f"{d}/memory.max", str(memory_bytes))
                if os.path.exists(f"{d}/memory.swap.max"):
                    _write(f"{d}/memory.swap.max", "0")
                _write(f"{d}/pids.max", str(max_procs))
            else:
                memory, pids = (f"{b}/{name}" for b in found.bases)
                for d in (memory, pids):
                    os.mkdir(d)
                    self.dirs.append(d)
                _write(f"{memory}/memory.limit_in_bytes", str(memory_bytes))
                if os.path.exists(f"{memory}/memory.memsw.limit_in_bytes"):
                    _write(f"{memory}/memory.memsw.limit_in_bytes", str(memory_bytes))
                _write(f"{pids}/pids.max", str(max_procs))
            self.fds = [os.open(f"{d}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
                        for d in self.dirs]
        except OSError:
            self.destroy()
            raise

    def usage(self) -> dict:
        """Peak memory (MiB) and OOM kills, while the cgroup exists."""
        d = self.dirs[0]
        if self.version == "v2":
            peak = _read(f"{d}/memory.peak").strip()
            events = _read(f"{d}/memory.events")
        else:
            peak = _read(f"{d}/memory.max_usage_in_bytes").strip()
            events = _read(f"{d}/memory.oom_control")
        kills = next((int(line.split()[1]) for line in events.splitlines()
                      if line.startswith("oom_kill ")), 0)
        return {"memory_peak_mb": round(int(peak) / (1 << 20), 1) if peak.isdigit() else None,
                "oom_kills": kills}

    def destroy(self, patience_s: float = 5.0) -> dict:
        """Close the descriptors, read the usage, remove the cgroup (its processes are gone:
        the sample's PID namespace ended; a few may still be exiting)."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        used = self.usage() if self.dirs else {}
        end, killed = time.monotonic() + patience_s, False
        for d in reversed(self.dirs):
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() < end:
                        time.sleep(0.01)
                    elif not killed and os.path.exists(f"{d}/cgroup.kill"):  # v2, >= 5.14
                        _write(f"{d}/cgroup.kill", "1")
                        end, killed = time.monotonic() + 1.0, True
                    else:
                        raise
        self.dirs = []
        return used


def create(memory_bytes: int, max_procs: int) -> SampleCgroup | None:
    """A cgroup for one sample, or None where this machine has none to offer."""
    found = support()
    return SampleCgroup(found, memory_bytes, max_procs) if found.version else None
