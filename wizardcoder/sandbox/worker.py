"""Untrusted side of the scorer: runs candidate programs and serves calls of their entry point.

Started by :mod:`wizardcoder.sandbox.pool` as ``python -s -S -P -B worker.py --zygote FD NET``
(the value codec and the audit hook come from ``codec.py`` and ``audit.py`` beside it, loaded by
path: no site-packages here). The trusted side never imports this module to decide anything.
The candidate is hostile; it never shares an interpreter with the code that decides the verdict,
so the worst a compromised worker can do is send wrong *plain data*. Processes:

* zygote (trusted, never runs candidate code): a fresh interpreter with a scrubbed environment
  and the modules solutions commonly import already loaded; then (a user namespace first when
  not root) IPC, empty network and mount namespaces, and a minimal read-only root holding only
  the interpreter, its libraries and standard library (``rootfs.py``; where that cannot be built,
  every filesystem read-only with the project directory hidden). It forks one outer process per
  sample (a fork costs ~1 ms, a new interpreter ~20 ms);
* outer (trusted): new session, new PID, mount, IPC and network namespaces (nothing one sample
  leaves in SysV IPC or a socket reaches the next), a fresh tmpfs as /tmp and cwd (the only
  writable place, bounded in size and inodes); forks the inner process, captures its output
  with a size cap, kills it when the harness says so (or dies), and reports exit status and
  CPU time on a status pipe;
* inner (untrusted): joins the sample's cgroup (``cgroup.py``: its memory and processes
  counted together), is PID 1 of the new PID namespace, so killing it kills all the candidate
  started; mounts a /proc of its own (and unmounts the host's, see ``rootfs.py``), sets
  rlimits, drops to an unprivileged uid (as root) and every capability, installs the seccomp
  filter (``seccomp.py``), forgets ctypes, installs an audit hook, then runs the candidate and
  answers calls.
"""

from __future__ import annotations

import builtins
import json
import os
import select
import signal
import sys
import time

try:  # imported as part of the package (tests, the trusted side)
    from wizardcoder.sandbox import rootfs as _rootfs
    from wizardcoder.sandbox import seccomp as _seccomp
    from wizardcoder.sandbox.audit import make_audit_hook
    from wizardcoder.sandbox.codec import (
        ProtocolError,
        TooLarge,
        Unserializable,
        decode_value,
        digest_value,
        encode_value,
        read_frame,
        write_frame,
    )
except ImportError:  # run as the sandbox's script: load the files beside this one by path,
    import importlib.util as _util  # in the zygote, before any directory is hidden

    def _beside(name):
        spec = _util.spec_from_file_location(
            f"_wizardcoder_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 f"{name}.py"))
        module = _util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    _codec, make_audit_hook = _beside("codec"), _beside("audit").make_audit_hook
    _rootfs, _seccomp = _beside("rootfs"), _beside("seccomp")
    ProtocolError, TooLarge, Unserializable = (_codec.ProtocolError, _codec.TooLarge,
                                               _codec.Unserializable)
    decode_value, digest_value, encode_value = (_codec.decode_value, _codec.digest_value,
                                                _codec.encode_value)
    read_frame, write_frame = _codec.read_frame, _codec.write_frame
    del _util, _beside, _codec

__all__ = ["ProtocolError", "TooLarge", "Unserializable", "decode_value", "encode_value"]

PRELOAD = ("typing", "collections", "re", "math", "cmath", "itertools", "functools", "operator",
           "heapq", "bisect", "string", "hashlib", "random", "statistics", "fractions",
           "decimal", "copy", "datetime", "array", "json", "dataclasses")


# ---------------------------------------------------------------- isolation (worker only)

NEWNS, NEWIPC, NEWNET, NEWPID, NEWUSER = 0x20000, 0x8000000, 0x40000000, 0x20000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_PRIVATE = 1, 2, 4, 8, 1 << 18
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYS_MOUNT_SETATTR = 442  # the same number on every architecture
_libc = None


def _libc_call(name, *args):
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _bytes(value):
    return value.encode() if isinstance(value, str) else value


def _mount(source, target, fstype, flags, data):
    _libc_call("mount", _bytes(source), _bytes(target), _bytes(fstype), flags, _bytes(data))


def _set_read_only(path, recursive):
    """mount_setattr: read-only and nosuid, the other flags kept (a user namespace may not
    clear the ones the host set), propagation private."""
    import ctypes

    # struct mount_attr {attr_set, attr_clr, propagation, userns_fd}
    attr = (ctypes.c_uint64 * 4)(0x1 | 0x2, 0, MS_PRIVATE, 0)  # MOUNT_ATTR_RDONLY | NOSUID
    _libc_call("syscall", SYS_MOUNT_SETATTR, -100, _bytes(path),  # AT_FDCWD
               0x8000 if recursive else 0, attr, 32)  # AT_RECURSIVE


def _pivot_root(new_root, put_old):
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(0, f"pivot_root: unknown system call number on {os.uname().machine}")
    _libc_call("syscall", number, _bytes(new_root), _bytes(put_old))


def _umount(target, flags):
    _libc_call("umount2", _bytes(target), flags)


def _minimal_root(new_root):
    """Pivot into a root that holds only the interpreter (see rootfs.py)."""
    _rootfs.build(new_root, _rootfs.plan(), _mount, _set_read_only, _pivot_root, _umount)


def _read_only_root(hide):
    """Fallback where the minimal root cannot be built: every mount read-only and nosuid; `hide`
    under empty tmpfs. Returns the directories actually hidden."""
    _set_read_only("/", True)
    hidden = []
    for path in hide:
        try:
            _libc_call("mount", b"none", path.encode(), b"tmpfs", 1 | MS_NOSUID | MS_NODEV,
                       b"size=4k,mode=0555")
            hidden.append(path)
        except OSError:
            pass
    return hidden


def _zygote(sock_fd, net, hide, new_root):
    """Fork server: one outer process per request; never runs candidate code itself."""
    import gc
    import socket

    for name in PRELOAD:
        __import__(name)
    # Frozen: no sample's garbage collection walks (and copies) these pages, and ctypes, which
    # is only imported below, stays young: each sample can free its classes (_forget_ctypes).
    gc.collect()
    gc.freeze()
    root = os.geteuid() == 0
    layers = {"root": root, "user_ns": None if root else False, "mount_ns": False,
              "ipc_ns": False, "net": False, "minimal_root": False, "fs_ro": False, "hidden": []}
    uid, gid = os.geteuid(), os.getegid()
    try:  # an unprivileged user gets the namespaces through a user namespace (see sandbox.py)
        _libc_call("unshare", NEWNS | NEWIPC | (NEWNET if net else 0) | (0 if root else NEWUSER))
        if not root:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
            layers["user_ns"] = True
            try:  # this namespace's own limit: no sample can nest user namespaces in it
                with open("/proc/sys/user/max_user_namespaces", "w") as handle:
                    handle.write("0")
            except OSError:
                pass
        layers.update(mount_ns=True, ipc_ns=True, net=net)
    except OSError as exc:
        layers["error"] = str(exc)
    if layers["mount_ns"] and new_root:
        try:
            _minimal_root(new_root)
            layers["minimal_root"] = layers["fs_ro"] = True
        except Exception as exc:  # best_effort falls back below; strict refuses (sandbox.py)
            layers["root_error"] = f"{type(exc).__name__}: {exc}"
    if layers["mount_ns"] and not layers["minimal_root"]:
        try:
            layers["hidden"] = _read_only_root(hide)
            layers["fs_ro"] = True
        except OSError as exc:
            layers["error"] = str(exc)
    layers["seccomp"], error = _probe_seccomp()
    if error:
        layers["seccomp_error"] = error
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished outers
    sock = socket.socket(fileno=sock_fd)
    sock.send(encode_value(layers, 1 << 12).encode())
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 6)
        if not msg:
            os._exit(0)  # the harness went away
        try:
            cfg = decode_value(json.loads(msg))
            cfg.update(zip(("req", "rep", "ctl", "st"), fds[:4], strict=True),
                       cgroup_fds=fds[4:], fs_ro=layers["fs_ro"],
                       minimal_root=layers["minimal_root"], net=layers["net"],
                       seccomp=cfg["syscalls"] if layers["seccomp"] else None)
            pid = os.fork()
        except Exception as exc:
            pid = f"error: {exc!r}"
        if pid == 0:
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _outer(cfg)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        sock.send(str(pid).encode())


def _probe_seccomp():
    """(whether this kernel takes the filter, why not): tried once in a child."""
    reason = _seccomp.unsupported()
    if reason:
        return False, reason
    pid = os.fork()
    if pid == 0:
        try:
            _seccomp.install("python")
            os._exit(0)
        except BaseException as exc:
            os.write(2, f"seccomp: {exc!r}\n".encode())
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return status == 0, "" if status == 0 else "the kernel refused the seccomp filter"


def _outer(cfg):
    os.setsid()
    tmp = cfg["tmp"]
    os.environ.update(HOME=tmp, TMPDIR=tmp)
    layers = {"pid": False, "tmp_rw": False}
    try:  # per sample: no IPC object or socket outlives it or reaches another sample
        _libc_call("unshare", NEWPID | NEWNS | NEWIPC | (NEWNET if cfg["net"] else 0))
        layers.update(pid=True, ipc=True, net_sample=cfg["net"])
        if cfg["fs_ro"]:  # the one writable place: a small tmpfs (RAM, gone with the sample)
            owner = "" if cfg["uid"] is None else f",uid={cfg['uid']},gid={cfg['gid']}"
            _mount("none", tmp, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={cfg['tmp_size']},nr_inodes={cfg['tmp_inodes']},mode=0700{owner}")
        layers["tmp_rw"] = True
    except OSError as exc:
        layers["error"] = str(exc)
        if cfg["minimal_root"]:  # the machine can do it: never run a sample without it
            write_frame(cfg["st"], encode_value(dict(layers, status=None), 1 << 16))
            return
    os.chdir(tmp)
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for fd in (out_r, cfg["ctl"], cfg["st"]):
                os.close(fd)
            _inner(cfg, out_w)
        except BaseException as exc:  # setup failed: never run the candidate
            os.write(2, f"sandbox setup failed: {exc!r}\n".encode("utf-8", "replace"))
        os._exit(70)
    for fd in (out_w, cfg["req"], cfg["rep"], *cfg["cgroup_fds"]):
        os.close(fd)
    _supervise(cfg, pid, out_r, layers)


def _drop_privileges(cfg):
    import ctypes

    if cfg.get("uid") is not None:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        if 0 in os.getresuid() or 0 in os.getresgid():
            raise SystemExit("privilege drop failed")
    # No capabilities left (without root they remain from the user namespace), no new ones.
    _libc_call("capset", (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)())
    _libc_call("prctl", 38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    _libc_call("prctl", 1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG (setuid resets it)


def _forget_ctypes():
    """No ctypes module, CDLL or function pointer left within reach of the candidate's imports,
    frames or ``object.__subclasses__()``. ``_ctypes``'s C types stay in the process (static
    types cannot be unloaded), so native code remains possible: the seccomp filter, not this,
    decides what it can do."""
    global _libc
    import gc

    _libc = None
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith(("ctypes.", "_ctypes"))]:
        sys.modules.pop(name).__dict__.clear()
    gc.collect()


def _inner(cfg, out_w):
    """Limits and privilege drop, then the candidate; nothing before this runs its code."""
    import random
    import resource

    for fd in cfg["cgroup_fds"]:  # first: every page and process from here on is counted
        os.write(fd, b"0")
        os.close(fd)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.close(out_w)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-big file is an error, not a kill
    cpu = max(1, int(cfg["cpu"] + 0.999))
    # PID 1 of a namespace ignores SIGXCPU: the hard limit's SIGKILL ends it.
    for res, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)),
                       (resource.RLIMIT_AS, (cfg["mem"],) * 2),
                       (resource.RLIMIT_FSIZE, (cfg["fsize"],) * 2),
                       (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NOFILE, (64, 64)),
                       (resource.RLIMIT_NPROC, (cfg["nproc"],) * 2)):
        resource.setrlimit(res, value)
    try:  # PID 1 of its own namespace: a /proc that shows only the sandbox's processes
        if cfg["fs_ro"]:
            _mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        if cfg["minimal_root"]:  # only there for the mount above: the host's processes
            _umount(_rootfs.HOST_PROC, 2)  # MNT_DETACH
    except OSError:
        if cfg["minimal_root"]:
            raise  # never run a sample that could see the host's /proc
        # else the audit hook still refuses /proc
    _drop_privileges(cfg)
    if cfg["seccomp"]:  # the zygote's probe found the kernel takes it: never run without
        _seccomp.install(cfg["seccomp"])
    _forget_ctypes()
    random.seed(0)  # every sample starts from the same state: verdicts are reproducible
    if cfg["audit"]:
        stdlib = getattr(sys, "_stdlib_dir", None) or os.path.dirname(os.__file__)
        sys.addaudithook(make_audit_hook(cfg["tmp"], (stdlib,)))
    _serve(cfg)


def _describe(exc):
    """[type name, message, is builtin] for an exception raised by candidate code."""
    try:
        cls = type(exc)
        name = str(cls.__name__)
        builtin = getattr(builtins, name, None) is cls
        message = str(exc)
    except BaseException:  # a hostile __str__ or __name__
        name, builtin, message = "Exception", False, "<unprintable exception>"
    return [name[:100], message[:2000], builtin]


def _serve(cfg):
    """Inner process main loop. Every reply is built from exact builtin types only."""
    req, rep, limit, enc = cfg["req"], cfg["rep"], cfg["max_reply"], encode_value

    def send(text):
        try:
            write_frame(rep, text)
        except BaseException:
            os._exit(1)

    send('{"ready":true}')
    msg = decode_value(json.loads((read_frame(req) or b"null").decode("ascii")))
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(msg["program"], "<candidate>", "exec"), namespace)
        fn = namespace[msg["entry"]]
        if not callable(fn):
            raise TypeError(f"{msg['entry']} is not callable")
    except BaseException as exc:
        send('{"load_error":' + enc(_describe(exc), 1 << 16) + "}")
        os._exit(0)
    send('{"loaded":true}')
    while (frame := read_frame(req)) is not None:
        msg = decode_value(json.loads(frame.decode("ascii")))
        if "run" in msg:  # differential tests: every input in turn, one reply per input
            send('{"started":true}')
            for args in msg["run"]:
                send(_answer(fn, args, {}, msg.get("not_none"), digest_value, limit))
            continue
        args, kwargs = msg["call"]
        send(_answer(fn, args, kwargs, None, None, limit))
    os._exit(0)


def _answer(fn, args, kwargs, not_none, digest, limit, _type=type, _bool=bool, _str=str,
            enc=encode_value):
    """One reply: ``ok`` (the value), ``digest`` (of a value above ``limit``, when ``digest`` is
    given), ``unserializable`` or ``exc``. ``not_none``: "all" sends ``value is not None``,
    "non_bool" does so unless the value is a bool (evalplus's MBPP oracle for outputs such as
    ``re.Match`` objects)."""
    out = None
    try:
        out = fn(*args, **kwargs)
        if not_none == "all" or (not_none == "non_bool" and _type(out) is not _bool):
            out = out is not None
        return '{"ok":' + enc(out, limit) + "}"
    except TooLarge as exc:
        if digest is None:
            return '{"unserializable":' + enc(_str(exc), 1 << 12) + "}"
        try:
            return '{"digest":"' + digest(out) + '"}'
        except BaseException:  # not exact builtin types (ValueError), out of memory...
            return '{"unserializable":"a value too large to send, and not made only of exact ' \
                   'builtin types"}'
    except Unserializable as exc:
        return '{"unserializable":' + enc(_str(exc), 1 << 12) + "}"
    except BaseException as exc:  # SystemExit, KeyboardInterrupt... are answers too
        try:
            return '{"exc":' + enc(_describe(exc), 1 << 16) + "}"
        except BaseException:
            return '{"exc":["Exception","<unprintable exception>",false]}'


def _supervise(cfg, pid, out_r, layers):
    """Outer loop: capture output (bounded), kill the inner process on request, report."""
    cap, ctl, buf, seen, killed = cfg["out_cap"], cfg["ctl"], bytearray(), 0, False
    poller = select.poll()
    pidfd = os.pidfd_open(pid)
    for fd in (ctl, pidfd, out_r):
        poller.register(fd, select.POLLIN)
    give_up = time.monotonic() + cfg["wall"] + 30  # the harness should always ask first
    while True:
        events = dict(poller.poll(1000))
        if out_r in events:
            data = os.read(out_r, 1 << 16)
            if not data:
                poller.unregister(out_r)
            seen += len(data)
            buf += data
            del buf[:max(0, len(buf) - cap)]
        if ctl in events or time.monotonic() > give_up:
            if not killed:
                os.kill(pid, 9)
                killed = True
            if ctl in events:
                poller.unregister(ctl)
        if pidfd in events:
            break
    _, status, usage = os.wait4(pid, 0)  # PID 1 gone: the kernel killed all it started
    os.set_blocking(out_r, False)
    try:
        while (data := os.read(out_r, 1 << 16)) and seen < (1 << 30):
            seen += len(data)
            buf = (buf + data)[-cap:]
    except BlockingIOError:
        pass
    report = dict(layers, status=status, cpu=usage.ru_utime + usage.ru_stime, killed=killed,
                  output=buf.decode("utf-8", "replace"), output_bytes=seen)
    write_frame(cfg["st"], encode_value(report, 1 << 24))
    if not layers["pid"]:  # no PID namespace: at least kill what is left in our group
        os.killpg(0, signal.SIGKILL)


# ---------------------------------------------------------------- toolchain programs (issue 19)
# toolchain_exec.py builds a language's root and drops privileges with these same calls.


def root_syscalls():
    """(mount, read_only, pivot, umount) in the form :func:`rootfs.build` takes them."""
    return _mount, _set_read_only, _pivot_root, _umount


def libc_call(name, *args):
    """A libc call by name; OSError on failure."""
    _libc_call(name, *args)


def drop_privileges(cfg):
    """Switch to ``cfg["uid"]``/``cfg["gid"]`` (None: keep) and drop every capability."""
    _drop_privileges(cfg)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--zygote"] or len(sys.argv) != 4:
        raise SystemExit("usage: worker.py --zygote SOCKET_FD "
                         "'{\"net\": bool, \"hide\": [dir...], \"root\": empty dir or null}'")
    _settings = json.loads(sys.argv[3])
    _zygote(int(sys.argv[2]), _settings["net"], _settings["hide"], _settings["root"])
