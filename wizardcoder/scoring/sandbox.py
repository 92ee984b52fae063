"""Process sandbox for untrusted candidate programs (trusted side).

Threat model: a completion comes from a model rewarded when tests pass, so it may try to fake a
pass (exit early, forge output, return objects equal to anything, read the expected answers from
disk or from this process) or harm the host (delete files, exfiltrate secrets, fork bombs,
daemons). Each sample runs in its own worker process (see ``worker.py``) inside these layers:

* a fresh interpreter (``-s -S -P -B``) forked from a pristine zygote, in its own session and
  process group, with a scrubbed environment (nothing from ``os.environ``: no API keys) and a
  fresh temp dir as cwd, deleted afterwards;
* namespaces: an empty network namespace (no interface up, not even loopback); a mount namespace
  where every filesystem is read-only except the temp dir and the project checkout is hidden; a
  PID namespace whose init is the candidate, so killing it kills everything it started;
* as root: an unprivileged uid of its own per concurrent sample (cannot read root's files or
  signal other processes; RLIMIT_NPROC applies);
* rlimits (CPU, address space, file size, processes, descriptors, no core dumps) and a wall-clock
  deadline enforced here by killing the whole tree;
* an audit hook inside the worker as a second layer (files, sockets, subprocesses, ctypes...).

No verdict is decided here: :mod:`wizardcoder.scoring.harness` does, from plain values only.
"""

from __future__ import annotations

import atexit
import heapq
import json
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wizardcoder.scoring.worker import ProtocolError, decode_value, encode_value

log = logging.getLogger(__name__)

WORKER = Path(__file__).with_name("worker.py")
PY_FLAGS = ("-s", "-S", "-P", "-B")  # no site-packages, no user site, no script dir on sys.path
MAX_REPLY_BYTES = 4 << 20
MAX_SLOTS, NOBODY = 64, 65534
_FIRST_UID = 1_600_000_000  # private uids: _FIRST_UID + 64 * (pid % 2**22) + slot
_SYSTEM_DIRS = {"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "proc", "run", "sbin",
                "sys", "tmp", "usr", "var"}


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0      # wall clock per sample
    cpu_s: float = 10.0
    memory_mb: int = 1024        # address space of the worker
    max_file_mb: int = 16
    max_procs: int = 32
    max_output_kb: int = 64
    isolate_network: bool = True


class SandboxFailure(BaseException):
    """The worker gave no usable answer; ``kind``: timeout, crashed, unserializable or
    sandbox_error. A BaseException so that no ``except Exception`` in a ``check`` swallows it."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


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

    def __init__(self, python: str, net: bool):
        self.lock = threading.Lock()
        self.sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [python, *PY_FLAGS, str(WORKER), "--zygote", str(child.fileno()), str(int(net)),
                 *_dirs_to_hide(python)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=[child.fileno()], env=_env("/"), cwd="/", start_new_session=True)
        finally:
            child.close()
        self.sock.settimeout(60)
        try:
            self.layers = decode_value(json.loads(self.sock.recv(1 << 12) or b"null"))
        except (OSError, ValueError, ProtocolError) as exc:
            self.close()
            raise SandboxFailure("sandbox_error", f"the worker zygote did not start: {exc}") \
                from None
        error = self.layers.get("error", "unknown error")
        if net and not self.layers.get("net"):
            _warn_once("net", f"no network namespace ({error}): candidate programs can reach "
                              "the network (the audit hook still blocks sockets)")
        if not self.layers.get("fs_ro"):
            _warn_once("fs", f"no read-only mount namespace ({error}): only the uid and the "
                             "audit hook keep candidate programs from writing outside")

    def spawn(self, cfg: dict, fds: list[int]) -> int:
        with self.lock:
            socket.send_fds(self.sock, [encode_value(cfg, 1 << 16).encode()], fds)
            reply = self.sock.recv(256).decode()
        if not reply.isdigit():
            raise SandboxFailure("sandbox_error", f"the worker zygote failed: {reply or 'EOF'}")
        return int(reply)

    def close(self) -> None:
        self.sock.close()  # the zygote exits when its socket closes
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _zygote(net: bool) -> _Zygote:
    python = host().python
    with _lock:
        key = (os.getpid(), net)
        if key not in _zygotes or _zygotes[key].proc.poll() is not None:
            _zygotes[key] = _Zygote(python, net)
        return _zygotes[key]


@atexit.register
def _close_zygotes() -> None:
    for key, zygote in list(_zygotes.items()):
        if key[0] == os.getpid():
            zygote.close()
        del _zygotes[key]


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
        self._fds: list[int] = []

    def __enter__(self) -> Worker:
        try:
            self._spawn(host())
        except BaseException:
            self.finish()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.finish()

    def _spawn(self, h: Host) -> None:
        lim = self.limits
        zygote = _zygote(lim.isolate_network)  # started once per process, not timed
        self.deadline = time.monotonic() + lim.timeout_s
        self._slot = _SLOTS.acquire()
        uid = None if h.uid_base is None else h.uid_base + (0 if h.shared_uid else self._slot)
        self.tmp = tempfile.mkdtemp(prefix="wc-sandbox-")
        if uid is not None:
            os.chown(self.tmp, uid, uid)
        (req_r, self._req), (self._rep, rep_w) = os.pipe(), os.pipe()
        (ctl_r, self._ctl), (self._st, st_w) = os.pipe(), os.pipe()
        self._fds = [self._req, self._rep, self._ctl, self._st]
        cfg = {"uid": uid, "gid": uid, "tmp": self.tmp, "cpu": float(lim.cpu_s),
               "mem": int(lim.memory_mb) << 20, "fsize": int(lim.max_file_mb) << 20,
               "tmp_size": 4 * int(lim.max_file_mb) << 20,
               "nproc": int(lim.max_procs), "out_cap": int(lim.max_output_kb) << 10,
               "max_reply": MAX_REPLY_BYTES, "wall": float(lim.timeout_s),
               "audit": self.audit_hook}
        try:
            self.pid = zygote.spawn(cfg, [req_r, rep_w, ctl_r, st_w])
        finally:
            for fd in (req_r, rep_w, ctl_r, st_w):
                os.close(fd)
        self.layers = dict(zygote.layers)
        os.set_blocking(self._req, False)

    def finish(self) -> dict:
        """Kill the worker tree, collect the outer process's report, clean up. Idempotent."""
        if self.status is not None:
            return self.status
        status: dict = {}
        try:
            if self.pid is not None:
                os.close(self._ctl)  # the outer process kills the candidate and reports
                self._fds.remove(self._ctl)
                status = self._report()
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = []
            if self.tmp is not None:
                _remove_tree(self.tmp)
            if self._slot is not None:
                _SLOTS.release(self._slot)
                self._slot = None
        self.status = {**self.layers, **status}
        return self.status

    def _report(self) -> dict:
        frame = _read_frame(self._st, time.monotonic() + 5.0, 1 << 24)
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

    def send(self, message: dict) -> None:
        """Encode (may raise worker.Unserializable) and write one message."""
        data = encode_value(message, 1 << 30).encode("ascii")
        data = len(data).to_bytes(4, "big") + data
        poll = select.poll()
        poll.register(self._req, select.POLLOUT)
        while data:
            if poll.poll(self._remaining_ms()):
                try:
                    data = data[os.write(self._req, data):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    raise self.died() from None

    def recv(self) -> dict:
        """One reply: a JSON object with exactly one key (values still tag-encoded)."""
        frame = _read_frame(self._rep, self.deadline, MAX_REPLY_BYTES + 4096)
        if frame is None:
            if time.monotonic() >= self.deadline:
                self._remaining_ms()
            raise self.died()
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
        tail = f"; output: {output[-300:]!r}" if output.strip() else ""
        return self.fail("crashed", f"candidate process {how} before answering{tail}")


def _read_frame(fd: int, end: float, limit: int) -> bytes | None:
    """One length-prefixed frame, or None on EOF, deadline or a frame above `limit`."""
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    buf, want = bytearray(), 4
    while len(buf) < want:
        left = end - time.monotonic()
        if left <= 0 or not poll.poll(int(left * 1000) + 1):
            return None
        chunk = os.read(fd, want - len(buf))
        if not chunk:
            return None
        buf += chunk
        if want == 4 and len(buf) == 4:
            want += int.from_bytes(buf, "big")
            if want > limit:
                return None
    return bytes(buf[4:])


def _remove_tree(path: str) -> None:
    def unlock(func, target, _exc):  # the candidate may have removed permissions
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=unlock)
