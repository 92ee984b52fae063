"""Process sandbox for untrusted candidate programs (trusted side).

Threat model: a completion comes from a model rewarded when tests pass, so it may try to fake a
pass (exit early, forge output, return objects equal to anything, read the expected answers from
disk or from this process) or harm the host (delete files, exfiltrate secrets, fork bombs,
daemons). Each sample runs in its own worker process (see ``worker.py``) inside these layers:

* a fresh interpreter (``-s -S -P -B``) forked from a pristine zygote (``zygote.py``), in its
  own session and process group, with a scrubbed environment (nothing from ``os.environ``: no
  API keys) and a fresh temp dir as cwd, deleted afterwards; one worker serves one sample (a
  batch starts the next ones ahead: :meth:`Worker.started`);
* namespaces: an empty network namespace (no interface up, not even loopback); IPC; a mount
  namespace whose root holds only the interpreter, its shared libraries and standard library
  (no site-packages), four devices, a fresh tmpfs as /tmp and cwd and a /proc of its own
  (``rootfs.py``): no $HOME, cache, checkout, benchmark file or host /tmp to read through any
  door; a PID namespace whose init is the candidate, so killing it kills everything it started;
* uid separation: as root, an unprivileged uid of its own per concurrent sample (cannot read
  root's files or signal other processes; RLIMIT_NPROC applies); as another user, a user
  namespace mapping only that user's uid (the only mapping possible without newuidmap), where
  the sample holds no capability and sees none of that user's files or processes;
* a seccomp filter (``seccomp.py``), installed before the first byte of candidate code and
  inherited by all it starts: no sockets, SysV/POSIX IPC, memfd, namespaces, mounts, ptrace,
  bpf, keyrings, io_uring... and, for Python samples, no second process; IPC and network
  namespaces of its own per sample (nothing one leaves behind reaches the next);
* a cgroup per sample (``cgroup.py``, where the machine offers one): memory (anonymous, shared
  and tmpfs pages of all its processes together) and process count bounded per sample; its
  tmpfs bounded in size and inodes;
* rlimits (CPU, address space, file size, processes, descriptors, no core dumps) and a wall-clock
  deadline enforced here by killing the whole tree;
* an audit hook inside the worker as a second layer (files, sockets, subprocesses, ctypes...):
  a convenience that gives clear errors, never a guarantee (native code can switch it off; the
  layers above hold without it).

``SandboxLimits.isolation`` "strict" (the default) refuses to start a worker when a layer is
missing (:func:`require_isolation` says which, before any sample); "best_effort" runs with what
the machine allows (:func:`isolation_layers` reports it).

No verdict is decided here: :mod:`wizardcoder.sandbox.harness` does, from plain values only.
"""

from __future__ import annotations

import atexit
import dataclasses
import heapq
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from wizardcoder.errors import ConfigError, ExternalError
from wizardcoder.sandbox import cgroup as cgroup_mod
from wizardcoder.sandbox.codec import (
    ProtocolError,
    decode_value,
    encode_value,
    read_frame,
    write_frame,
)
from wizardcoder.sandbox.zygote import (  # noqa: F401  (re-exported)
    LAYER_HINTS,
    MAX_SLOTS,
    NOBODY,
    PY_FLAGS,
    WORKER,
    Host,
    ZygoteError,
    close_zygotes,
    host,
    layers_of,
    missing_layers,
    zygote_for,
)

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 4 << 20


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0      # wall clock per sample
    cpu_s: float = 10.0
    memory_mb: int = 1024        # per process (address space) and per sample (cgroup)
    max_file_mb: int = 16
    max_procs: int = 32          # per sample (cgroup pids) and per uid (RLIMIT_NPROC)
    max_output_kb: int = 64
    isolate_network: bool = True
    isolation: str = "strict"    # strict: no sample runs unless every layer is active
    tmp_mb: int = 64             # the sample's tmpfs (/tmp, its cwd): size...
    tmp_inodes: int = 4096       # ...and number of files
    syscalls: str = "python"     # seccomp profile (seccomp.PROFILES): python or toolchain


class SandboxFailure(BaseException):
    """The worker gave no usable answer; ``kind``: timeout, crashed, unserializable or
    sandbox_error. A BaseException so that no ``except Exception`` in a ``check`` swallows it."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class _Slots:
    """Concurrent-sample slots: slot i runs as uid_base + i, so samples are isolated from each
    other too and a fork bomb in one does not eat another's RLIMIT_NPROC."""

    def __init__(self, size: int):
        self._free, self._cond = list(range(size)), threading.Condition()

    def acquire(self) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self._free)
            return heapq.heappop(self._free)

    def release(self, slot: int) -> None:
        with self._cond:
            heapq.heappush(self._free, slot)
            self._cond.notify()


_SLOTS = _Slots(MAX_SLOTS)
_reapers: dict[int, ThreadPoolExecutor] = {}
_reapers_lock = threading.Lock()
# Spare workers, started ahead so that a sample does not wait ~10 ms for a fresh PID namespace
# (Worker.started). The outer process gives up wall + 30 s after it starts: spares are used
# well before that or discarded.
SPARE_MAX_AGE_S, MAX_SPARES = 15.0, 8
_spares: dict[tuple, list] = {}
_spares_lock = threading.Lock()


def _add_spare(key: tuple) -> None:
    with _spares_lock:
        if len(_spares.get(key, ())) >= MAX_SPARES:
            return
    worker = Worker(key[1], key[2])
    try:
        worker._spawn(host())
    except BaseException as exc:  # the next sample spawns its own and reports the problem
        worker.finish(wait=False)
        log.debug("sandbox: no spare worker: %s", exc)
        return
    with _spares_lock:
        if key in _spares and len(_spares[key]) < MAX_SPARES:
            _spares[key].append(worker)
            return
    worker.finish(wait=False)  # drained meanwhile, or enough already


@atexit.register
def drain_spares() -> None:
    """Stop this process's spare workers (the end of a batch of samples)."""
    with _spares_lock:
        mine = [k for k in _spares if k[0] == os.getpid()]
        workers = [w for k in mine for w in _spares.pop(k)]
    for worker in workers:
        worker.finish()


def _close_zygotes() -> None:
    """Stop the spares and the zygotes (the next worker starts a fresh zygote)."""
    drain_spares()
    close_zygotes()


def _reaper() -> ThreadPoolExecutor:
    """Threads finishing workers in the background (one pool per process: not after fork)."""
    with _reapers_lock:
        pool = _reapers.get(os.getpid())
        if pool is None:
            pool = _reapers[os.getpid()] = ThreadPoolExecutor(
                max_workers=MAX_SLOTS, thread_name_prefix="wizardcoder-sandbox-reaper")
        return pool


def _reject_constant(name: str):
    raise ValueError(f"bare {name} in JSON")


class Worker:
    """One sandboxed worker process for one sample (a context manager): ``send`` and ``recv``
    exchange JSON messages within the sample's wall-clock deadline; any failure raises
    :class:`SandboxFailure`. ``finish`` kills the tree and returns the outer process's report
    (exit status, CPU time, output tail, active layers)."""

    def __init__(self, limits: SandboxLimits, audit_hook: bool = True):
        self.limits, self.audit_hook = limits, audit_hook
        self.deadline = float("inf")  # set once the worker is being started
        self.status: dict | None = None
        self.failure: SandboxFailure | None = None
        self.ready = False  # set by the caller once the worker said it started
        self.tmp: str | None = None
        self.pid: int | None = None
        self.layers: dict = {}
        self._slot: int | None = None
        self._cgroup: cgroup_mod.SampleCgroup | None = None
        self._fds: list[int] = []
        self._lock = threading.RLock()
        self.spawned = 0.0

    def __enter__(self) -> Worker:
        if self.pid is not None:  # from Worker.started: already running
            return self
        try:
            self._spawn(host())
        except BaseException:
            self.finish()
            raise
        return self

    @classmethod
    def started(cls, limits: SandboxLimits, audit_hook: bool = True) -> Worker:
        """A running worker, taken from the spares started ahead for these settings when
        there is one (a spare has run no candidate code: it waits for its first program);
        a replacement spare starts in the background. Callers that use this call
        :func:`drain_spares` when their batch is done."""
        key = (os.getpid(), limits, audit_hook)
        _reaper().submit(_add_spare, key)
        with _spares_lock:
            queue = _spares.setdefault(key, [])
            while queue:
                worker = queue.pop()
                if time.monotonic() - worker.spawned < SPARE_MAX_AGE_S:
                    worker.deadline = time.monotonic() + limits.timeout_s
                    return worker
                worker.finish(wait=False)
        return cls(limits, audit_hook).__enter__()

    def __exit__(self, *exc) -> None:
        self.finish(wait=False)

    def _spawn(self, h: Host) -> None:
        lim = self.limits
        support = cgroup_mod.support()  # first: cgroup v2 may move this process to a leaf
        try:
            zygote = zygote_for(lim.isolate_network)  # started once per process, not timed
        except ZygoteError as exc:
            raise SandboxFailure("sandbox_error", str(exc)) from None
        if lim.isolation == "strict":
            missing = missing_layers(
                layers_of(dict(zygote.layers, cgroup=support.version), h, lim.isolate_network,
                          per_sample=False, syscalls=lim.syscalls), lim.isolate_network)
            if missing:
                raise SandboxFailure("sandbox_error", refusal(missing, zygote.layers)[:400])
        if support.version:
            try:
                self._cgroup = cgroup_mod.create(int(lim.memory_mb) << 20, int(lim.max_procs))
            except OSError as exc:
                raise SandboxFailure("sandbox_error", f"no cgroup for the sample: {exc}") \
                    from None
        self.spawned = time.monotonic()
        self.deadline = self.spawned + lim.timeout_s
        self._slot = _SLOTS.acquire()
        uid = None if h.uid_base is None else h.uid_base + (0 if h.shared_uid else self._slot)
        if zygote.layers.get("minimal_root"):
            tmp = "/tmp"  # a fresh tmpfs in the sample's own root: nothing on the host
        else:  # best_effort without the minimal root: a private directory on the host
            tmp = self.tmp = tempfile.mkdtemp(prefix="wc-sandbox-")
            if uid is not None:
                os.chown(self.tmp, uid, uid)
        (req_r, self._req), (self._rep, rep_w) = os.pipe(), os.pipe()
        (ctl_r, self._ctl), (self._st, st_w) = os.pipe(), os.pipe()
        self._fds = [self._req, self._rep, self._ctl, self._st]
        cfg = {"uid": uid, "gid": uid, "tmp": tmp, "cpu": float(lim.cpu_s),
               "mem": int(lim.memory_mb) << 20, "fsize": int(lim.max_file_mb) << 20,
               "tmp_size": int(lim.tmp_mb) << 20, "tmp_inodes": int(lim.tmp_inodes),
               "nproc": int(lim.max_procs), "out_cap": int(lim.max_output_kb) << 10,
               "max_reply": MAX_REPLY_BYTES, "wall": float(lim.timeout_s),
               "audit": self.audit_hook, "syscalls": lim.syscalls}
        cgroup_fds = self._cgroup.fds if self._cgroup else []
        try:
            self.pid = zygote.spawn(cfg, [req_r, rep_w, ctl_r, st_w, *cgroup_fds])
        except ZygoteError as exc:
            raise SandboxFailure("sandbox_error", str(exc)) from None
        finally:
            for fd in (req_r, rep_w, ctl_r, st_w):
                os.close(fd)
        self.layers = dict(zygote.layers, cgroup=support.version, syscalls=lim.syscalls)
        os.set_blocking(self._req, False)

    def finish(self, wait: bool = True) -> dict | None:
        """Kill the worker tree, collect the outer process's report, clean up. Idempotent.

        ``wait=False`` (the end of a ``with`` block, when nobody needs the report) tells the
        worker to stop at once and leaves the rest to a background thread: tearing down a PID
        namespace takes ~10 ms of kernel latency (an RCU grace period), not CPU, so the next
        sample need not wait for it. Its uid slot is only reused once that is done."""
        with self._lock:
            if self.status is not None:
                return self.status
            if not wait and self.pid is not None and self._ctl in self._fds:
                os.close(self._ctl)  # the outer process kills the candidate now
                self._fds.remove(self._ctl)
                _reaper().submit(self.finish)
                return None
            status: dict = {}
            try:
                if self.pid is not None:
                    if self._ctl in self._fds:
                        os.close(self._ctl)  # the outer process kills the candidate and reports
                        self._fds.remove(self._ctl)
                    status = self._report()
            finally:
                for fd in self._fds:
                    os.close(fd)
                self._fds = []
                if self.tmp is not None:
                    _remove_tree(self.tmp)
                if self._cgroup is not None:
                    try:
                        status.update(self._cgroup.destroy())
                    except OSError as exc:
                        log.warning("sandbox: a sample's cgroup could not be removed: %s", exc)
                    self._cgroup = None
                if self._slot is not None:
                    _SLOTS.release(self._slot)
                    self._slot = None
            self.status = {**self.layers, **status}
            return self.status

    def _report(self) -> dict:
        frame = read_frame(self._st, time.monotonic() + 5.0, 1 << 24)
        if frame is None:  # stuck (it always reports before exiting), so its pgid is still ours
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            return {"error": "the worker's supervisor did not report"}
        try:
            status = decode_value(json.loads(frame, parse_constant=_reject_constant))
            if isinstance(status, dict):
                return status
        except (ValueError, RecursionError, ProtocolError):
            pass
        return {"error": "unreadable status from the worker's supervisor"}

    def send(self, message: dict | str) -> None:
        """Encode (may raise codec.Unserializable) and write one message; a ``str`` is a
        message encoded already (the same inputs go to every sample of a task)."""
        text = message if isinstance(message, str) else encode_value(message, 1 << 30)
        try:
            write_frame(self._req, text, self._remaining_ms)
        except BrokenPipeError:
            raise self.died() from None

    def recv_raw(self, deadline: float | None = None, limit_label: str = "") -> bytes:
        """One reply frame as sent. ``deadline`` (monotonic) is a per-call limit within the
        sample's own: past it the worker is stopped and a ``timeout`` naming ``limit_label``
        is raised."""
        end = self.deadline if deadline is None else min(deadline, self.deadline)
        frame = read_frame(self._rep, end, MAX_REPLY_BYTES + 4096)
        if frame is None:
            now = time.monotonic()
            if now >= self.deadline:
                self._remaining_ms()
            if now >= end:
                raise self.fail("timeout", limit_label or "time limit")
            raise self.died()
        return frame

    def recv(self, deadline: float | None = None, limit_label: str = "") -> dict:
        """One reply: a JSON object with exactly one key (values still tag-encoded)."""
        return self.parse(self.recv_raw(deadline, limit_label))

    def parse(self, frame: bytes) -> dict:
        try:
            msg = json.loads(frame, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise self.fail("crashed", "malformed reply") from None
        if type(msg) is not dict or len(msg) != 1:
            raise self.fail("crashed", "malformed reply")
        return msg

    def _remaining_ms(self) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.fail("timeout", f"wall-clock limit of {self.limits.timeout_s:g} s")
        return max(1, int(left * 1000))

    def fail(self, kind: str, detail: str) -> SandboxFailure:
        """Record the first failure (later calls return it) and stop the worker."""
        if self.failure is None:
            self.failure = SandboxFailure(kind, detail)
            self.finish()
        return self.failure

    def died(self) -> SandboxFailure:
        """The worker stopped answering: classify from the outer process's report."""
        st = self.finish()
        output = st.get("output", "")
        if not self.ready or "status" not in st:
            reason = st.get("error") or output or "no report"
            return self.fail("sandbox_error", f"worker failed to start: {reason[-400:]}")
        code = os.waitstatus_to_exitcode(st["status"])
        if code < 0 and -code in (signal.SIGKILL, signal.SIGXCPU) and \
                st.get("cpu", 0.0) >= self.limits.cpu_s - 0.05:
            return self.fail("timeout", f"CPU limit of {self.limits.cpu_s:g} s")
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        if st.get("oom_kills"):
            how += f" (the sample's memory limit of {self.limits.memory_mb} MiB)"
        tail = f"; output: {output[-300:]!r}" if output.strip() else ""
        return self.fail("crashed", f"candidate process {how} before answering{tail}")


ISOLATION_MODES = ("strict", "best_effort")


def refusal(missing: list[tuple[str, str]], status: dict) -> str:
    """Why strict mode will not score here, and how to fix it."""
    errors = "; ".join(f"{k}: {status[k]}" for k in ("error", "root_error") if status.get(k))
    return ("isolation is strict, but these sandbox layers are unavailable on this machine: " +
            "; ".join(f"{name} ({hint})" for name, hint in missing) +
            (f". System errors: {errors}" if errors else "") +
            ". Fix the machine, or set score.isolation: best_effort (wizardcoder score "
            "--isolation best_effort) to score with the layers that are active; they are "
            "recorded in metrics/score.json and the MLflow run.")


def isolation_layers(limits: SandboxLimits | None = None) -> dict:
    """The isolation layers active on this machine (see :func:`layers_of`), measured by
    starting one worker with a trivial program of ours (no sample); ``started`` says whether it
    ran, ``errors`` what the system refused."""
    limits = dataclasses.replace(limits or SandboxLimits(timeout_s=30), isolation="best_effort")
    h = host()
    worker, started, failure = Worker(limits), False, None
    try:
        with worker:
            worker.send({"program": "def f():\n    return 1\n", "entry": "f"})
            started = worker.recv() == {"ready": True} and worker.recv() == {"loaded": True}
    except SandboxFailure as exc:
        failure = exc.detail
    status = worker.finish() or {}
    layers = layers_of(status, h, limits.isolate_network, syscalls=limits.syscalls)
    errors = [str(status[k]) for k in ("error", "root_error") if status.get(k)]
    return {**layers, "started": started, "errors": errors + ([failure] if failure else [])}


def require_isolation(mode: str, limits: SandboxLimits) -> dict:
    """Before any sample runs: in ``strict`` mode raise :class:`ExternalError` (exit status 2)
    naming each unavailable layer and how to enable it; in ``best_effort`` mode return what is
    active (for the metrics) whatever it is. Returns ``{"mode", **layers}``."""
    if mode not in ISOLATION_MODES:
        raise ConfigError(f"score.isolation: expected one of {', '.join(ISOLATION_MODES)}, "
                          f"got {mode!r}")
    layers = isolation_layers(limits)
    missing = missing_layers(layers, limits.isolate_network)
    if mode == "strict" and (missing or not layers["started"]):
        if not missing:
            raise ExternalError("the sandbox could not start a worker: " +
                                ("; ".join(layers["errors"]) or "no error reported"))
        raise ExternalError(refusal(missing, {"error": "; ".join(layers["errors"])}))
    if missing:
        log.warning("SANDBOX: isolation best_effort: running without %s (%s)",
                    ", ".join(name for name, _ in missing), "; ".join(layers["errors"]))
    return {"mode": mode, **layers}


def active_isolation(limits: SandboxLimits) -> dict:
    """:func:`require_isolation` in ``limits.isolation``'s mode, checked before any sample
    runs, without the system errors (they may name temporary paths): what a stage records."""
    layers = require_isolation(limits.isolation, limits)
    return {k: v for k, v in layers.items() if k != "errors"}


def _remove_tree(path: str) -> None:
    def unlock(func, target, _exc):  # the candidate may have removed permissions
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=unlock)
