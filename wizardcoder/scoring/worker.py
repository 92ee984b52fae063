"""Untrusted side of the scorer: runs candidate programs and serves calls of their entry point.

Started by :mod:`wizardcoder.scoring.sandbox` as ``python -s -S -P -B worker.py --zygote FD NET``;
the trusted harness imports this module only for the value codec. The candidate is hostile; it
never shares an interpreter with the code that decides the verdict, so the worst a compromised
worker can do is send wrong *plain data*. Processes:

* zygote (trusted, never runs candidate code): a fresh interpreter with a scrubbed environment, an
  empty network namespace, a mount namespace where every filesystem is read-only and the project
  directory is hidden, and the modules solutions commonly import already loaded. It forks one
  outer process per sample (a fork costs ~1 ms, a new interpreter ~20 ms);
* outer (trusted): new session, new PID and mount namespaces, the sample's temp dir as cwd (the
  only writable place); forks the inner process, captures its output with a size cap, kills it
  when the harness says so (or dies), and reports exit status and CPU time on a status pipe;
* inner (untrusted): PID 1 of the new PID namespace, so killing it kills all the candidate
  started; mounts a /proc of its own, sets rlimits, drops to an unprivileged uid (as root) and
  every capability, installs an audit hook, then runs the candidate and answers calls.
"""

from __future__ import annotations

import builtins
import json
import os
import select
import signal
import sys
import time

TAG, MAX_DEPTH = "$", 100
_BIG_INT_BITS = 12000  # beyond ~3600 digits: sent as hex (int<->str conversion is capped at 4300)
_STD_DICTS = {"Counter", "OrderedDict", "defaultdict"}
PRELOAD = ("typing", "collections", "re", "math", "cmath", "itertools", "functools", "operator",
           "heapq", "bisect", "string", "hashlib", "random", "statistics", "fractions",
           "decimal", "copy", "datetime", "array", "json", "dataclasses")


class Unserializable(Exception):
    """A return value that is not made only of exact builtin types (or is too big/deep)."""


class ProtocolError(Exception):
    """A frame that does not follow the protocol."""


def _make_codec():
    # Everything the codec uses is bound here, before any candidate code runs, so a candidate
    # that monkeypatches builtins cannot change how its return value is encoded.
    _type, _len, _hex, _isinstance, _list, _dict = type, len, hex, isinstance, list, dict
    _str, _int, _float, _bool, _bytes, _complex = str, int, float, bool, bytes, complex
    _int_repr, _float_repr, _items = int.__repr__, float.__repr__, dict.items
    _fromhex, _inf, _enumerate = bytes.fromhex, float("inf"), enumerate
    _Unser, _Proto, _TypeError, _ValueError = Unserializable, ProtocolError, TypeError, ValueError
    from _json import encode_basestring_ascii as _esc

    seqs = {tuple: '{"$":"tuple","v":[', set: '{"$":"set","v":[',
            frozenset: '{"$":"frozenset","v":['}
    builders = {"tuple": tuple, "set": set, "frozenset": frozenset}
    floats = {"inf": _inf, "-inf": -_inf, "nan": _float("nan")}

    def encode(value, limit):
        out, total = [], 0

        def enc(v, depth):
            nonlocal total
            t = _type(v)
            if (t is _str or t is _bytes) and total + _len(v) > limit:
                raise _Unser(f"value larger than {limit} bytes")
            if t is _str:
                s = _esc(v)
            elif t is _int:
                s = _int_repr(v) if v.bit_length() <= _BIG_INT_BITS else \
                    '{"$":"int","v":"' + _hex(v) + '"}'
            elif t is _float:
                s = _float_repr(v) if -_inf < v < _inf else '{"$":"float","v":"' + (
                    "nan" if v != v else "inf" if v > 0 else "-inf") + '"}'
            elif v is None or t is _bool:
                s = "null" if v is None else "true" if v else "false"
            elif t is _bytes:
                s = '{"$":"bytes","v":"' + v.hex() + '"}'
            elif depth >= MAX_DEPTH:
                raise _Unser(f"value nested deeper than {MAX_DEPTH} levels")
            elif t is _list or t in seqs:
                out.append("[" if t is _list else seqs[t])
                for i, item in _enumerate(v):
                    if i:
                        out.append(",")
                    enc(item, depth + 1)
                s = "]" if t is _list else "]}"
            elif t is _dict or (_isinstance(v, _dict) and t.__module__ == "collections"
                                and t.__name__ in _STD_DICTS):
                # Counter/OrderedDict/defaultdict compare like their plain-dict contents.
                out.append('{"$":"dict","v":[')
                for i, (key, item) in _enumerate(_items(v)):
                    out.append(",[" if i else "[")
                    enc(key, depth + 1)
                    out.append(",")
                    enc(item, depth + 1)
                    out.append("]")
                s = "]}"
            elif t is _complex:
                out.append('{"$":"complex","v":[')
                enc(v.real, depth + 1)
                out.append(",")
                enc(v.imag, depth + 1)
                s = "]}"
            else:
                raise _Unser(f"cannot send a value of type {t.__module__}.{t.__qualname__}")
            total += _len(s) + 1
            if total > limit:
                raise _Unser(f"value larger than {limit} bytes")
            out.append(s)

        enc(value, 0)
        return "".join(out)

    def decode(obj, depth=0):
        t = _type(obj)
        if t is _str or t is _int or t is _float or t is _bool or obj is None:
            return obj
        if depth >= MAX_DEPTH:
            raise _Proto("value nested too deeply")
        if t is _list:
            return [decode(x, depth + 1) for x in obj]
        if t is not _dict or _len(obj) != 2 or TAG not in obj or "v" not in obj:
            raise _Proto("malformed value")
        tag, v = obj[TAG], obj["v"]
        try:
            if tag in builders and _type(v) is _list:
                return builders[tag]([decode(x, depth + 1) for x in v])
            if tag == "dict" and _type(v) is _list:
                pairs = [(decode(p[0], depth + 1), decode(p[1], depth + 1)) for p in v
                         if _type(p) is _list and _len(p) == 2]
                if _len(pairs) == _len(v):
                    return _dict(pairs)
            elif tag == "complex" and _type(v) is _list and _len(v) == 2:
                parts = [decode(x, depth + 1) for x in v]
                if _type(parts[0]) is _float and _type(parts[1]) is _float:
                    return _complex(*parts)
            elif tag == "bytes" and _type(v) is _str:
                return _fromhex(v)
            elif tag == "float" and v in floats:
                return floats[v]
            elif tag == "int" and _type(v) is _str and _len(v) < (1 << 22):
                return _int(v, 16)
        except (_TypeError, _ValueError) as exc:  # unhashable key, bad hex...
            raise _Proto(f"malformed {tag}: {exc}") from None
        raise _Proto(f"malformed value tagged {tag!r}")

    return encode, decode


encode_value, decode_value = _make_codec()


def write_frame(fd, text):
    data = text.encode("ascii")  # the encoder escapes everything outside ASCII
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data):]


def read_frame(fd):
    """One frame from the (trusted) harness, or None at EOF."""
    buf, want = b"", 4
    while len(buf) < want:
        chunk = os.read(fd, min(want - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
        if want == 4 and len(buf) == 4:
            want += int.from_bytes(buf, "big")
    return buf[4:].decode("ascii")


# ---------------------------------------------------------------- isolation (worker only)

NEWNS, NEWIPC, NEWNET, NEWPID, NEWUSER = 0x20000, 0x8000000, 0x40000000, 0x20000000, 0x10000000
MS_NOSUID, MS_NODEV, MS_PRIVATE = 2, 4, 1 << 18
_libc = None


def _libc_call(name, *args):
    global _libc
    import ctypes

    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _read_only_root(hide):
    """Every mount read-only and nosuid (one mount_setattr call); `hide` under empty tmpfs.
    Returns the directories actually hidden."""
    import ctypes

    # struct mount_attr {attr_set, attr_clr, propagation, userns_fd}; syscall 442 everywhere.
    attr = (ctypes.c_uint64 * 4)(0x1 | 0x2, 0, MS_PRIVATE, 0)  # MOUNT_ATTR_RDONLY | NOSUID
    _libc_call("syscall", 442, -100, b"/", 0x8000, attr, 32)  # AT_FDCWD, AT_RECURSIVE
    hidden = []
    for path in hide:
        try:
            _libc_call("mount", b"none", path.encode(), b"tmpfs", 1 | MS_NOSUID | MS_NODEV,
                       b"size=4k,mode=0555")
            hidden.append(path)
        except OSError:
            pass
    return hidden


def _zygote(sock_fd, net, hide):
    """Fork server: one outer process per request; never runs candidate code itself."""
    import socket

    for name in PRELOAD:
        __import__(name)
    layers = {"root": os.geteuid() == 0, "net": False, "fs_ro": False}
    uid, gid = os.geteuid(), os.getegid()
    try:  # an unprivileged user gets the namespaces through a user namespace
        _libc_call("unshare", NEWNS | NEWIPC | (NEWNET if net else 0) |
                   (0 if layers["root"] else NEWUSER))
        layers["net"] = net
        if not layers["root"]:
            for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                               ("gid_map", f"{gid} {gid} 1")):
                with open(f"/proc/self/{name}", "w") as handle:
                    handle.write(text)
        layers["hidden"] = _read_only_root(hide)
        layers["fs_ro"] = True
    except OSError as exc:
        layers["error"] = str(exc)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished outers
    sock = socket.socket(fileno=sock_fd)
    sock.send(encode_value(layers, 1 << 12).encode())
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 4)
        if not msg:
            os._exit(0)  # the harness went away
        try:
            cfg = decode_value(json.loads(msg))
            cfg.update(zip(("req", "rep", "ctl", "st"), fds, strict=True), fs_ro=layers["fs_ro"])
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


def _outer(cfg):
    os.setsid()
    tmp = cfg["tmp"]
    os.environ.update(HOME=tmp, TMPDIR=tmp)
    layers = {"pid": False, "tmp_rw": False}
    try:
        _libc_call("unshare", NEWPID | NEWNS)
        layers["pid"] = True
        if cfg["fs_ro"]:  # the one writable place: a small tmpfs (RAM, gone with the sample)
            owner = "" if cfg["uid"] is None else f",uid={cfg['uid']},gid={cfg['gid']}"
            _libc_call("mount", b"none", tmp.encode(), b"tmpfs", MS_NOSUID | MS_NODEV,
                       f"size={cfg['tmp_size']},nr_inodes=4096,mode=0700{owner}".encode())
        layers["tmp_rw"] = True
    except OSError as exc:
        layers["error"] = str(exc)
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
    for fd in (out_w, cfg["req"], cfg["rep"]):
        os.close(fd)
    _supervise(cfg, pid, out_r, layers)


def _drop_privileges(cfg):
    global _libc
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
    _libc = None  # and no ctypes left within reach of the candidate's frames or imports
    for name in [n for n in sys.modules if n == "ctypes" or n.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]


def _inner(cfg, out_w):
    """Limits and privilege drop, then the candidate; nothing before this runs its code."""
    import random
    import resource

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
            _libc_call("mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | 8, None)
    except OSError:
        pass  # the audit hook still refuses /proc
    _drop_privileges(cfg)
    random.seed(0)  # every sample starts from the same state: verdicts are reproducible
    if cfg["audit"]:
        stdlib = getattr(sys, "_stdlib_dir", None) or os.path.dirname(os.__file__)
        sys.addaudithook(_make_audit_hook(cfg["tmp"], (stdlib,)))
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
    msg = decode_value(json.loads(read_frame(req) or "null"))
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
        args, kwargs = decode_value(json.loads(frame))["call"]
        try:
            reply = '{"ok":' + enc(fn(*args, **kwargs), limit) + "}"
        except Unserializable as exc:
            reply = '{"unserializable":' + enc(str(exc), 1 << 12) + "}"
        except BaseException as exc:  # SystemExit, KeyboardInterrupt... are answers too
            try:
                reply = '{"exc":' + enc(_describe(exc), 1 << 16) + "}"
            except BaseException:
                reply = '{"exc":["Exception","<unprintable exception>",false]}'
        send(reply)
    os._exit(0)


def _make_audit_hook(tmp, read_roots):
    """Second layer: refuse what a HumanEval solution never needs. Everything the hook calls is
    bound now (C functions, builtin-type methods), so monkeypatching ``os`` or ``builtins``
    cannot change its checks."""
    import _stat
    import posix

    getcwd, lstat, stat, readlink = posix.getcwd, posix.lstat, posix.stat, posix.readlink
    is_link, s_isdir = _stat.S_ISLNK, _stat.S_ISDIR
    _type, _len, _str, _bytes, _int, _zip = type, len, str, bytes, int, zip
    Denied, _OSError, _ValueError = PermissionError, OSError, ValueError
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    own_pid, devices = posix.getpid(), ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
    deny = frozenset(("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec",
                      "os.system", "subprocess.Popen", "os.killpg", "sys.addaudithook",
                      "sys._current_frames", "sys._current_exceptions", "sys.settrace",
                      "sys.setprofile", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
                      "code.__new__"))
    deny_prefixes = ("socket.", "ctypes.")
    deny_imports = frozenset(("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters",
                              "_testcapi", "_testinternalcapi", "_testbuffer", "_xxtestfuzz"))
    # event -> (positions of the paths it changes, positions of their dir_fd arguments)
    modifying = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                 "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
                 "os.symlink": ((1,), (2,)), "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)),
                 "os.utime": ((0,), (3,)), "os.truncate": ((0,), (-1,)),
                 "os.setxattr": ((0,), (-1,)), "os.removexattr": ((0,), (-1,))}

    def resolve(path, dir_fd=-1):
        if _type(path) is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        elif _type(path) is not _str:  # a PathLike could answer differently the second time
            raise Denied("sandbox: only str or bytes paths are allowed")
        if "\0" in path:
            raise Denied("sandbox: NUL in path")
        if not path.startswith("/"):
            base = getcwd() if dir_fd is None or dir_fd == -1 else \
                readlink("/proc/self/fd/" + _str(dir_fd))
            path = base + "/" + path
        pending, parts, links = path.split("/")[::-1], [], 0
        while pending:
            name = pending.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            here = "/" + "/".join(parts) + ("/" if parts else "") + name
            try:
                link = is_link(lstat(here).st_mode)
            except (_OSError, _ValueError):
                link = False
            if not link:
                parts.append(name)
                continue
            links += 1
            if links > 40:
                raise Denied("sandbox: too many symbolic links")
            target = readlink(here)
            if target.startswith("/"):
                parts = []
            pending.extend(target.split("/")[::-1])
        return "/" + "/".join(parts)

    def inside(path, root):
        return path == root or path.startswith(root + "/")

    tmp = resolve(tmp)
    read_roots = tuple(resolve(root) for root in read_roots)

    def check_write(path, dir_fd=-1):
        if dir_fd is True:  # from "open": no dir_fd argument
            dir_fd = -1
        if _type(path) is _int:
            raise Denied("sandbox: changing files through a descriptor is blocked")
        full = resolve(path, dir_fd)
        if not inside(full, tmp) and full != "/dev/null":
            raise Denied("sandbox: writing outside the sandbox directory is blocked: " + full)

    def check_read(path, opening=False):
        if _type(path) is _int or path is None:
            return  # an open descriptor (already checked) or the working directory
        full = resolve(path)
        if inside(full, tmp) or full in devices:
            return
        try:
            is_dir = opening and s_isdir(stat(full).st_mode)
        except (_OSError, _ValueError):
            is_dir = False
        if not is_dir and "/site-packages" not in full and "/dist-packages" not in full:
            for root in read_roots:
                if inside(full, root):
                    return
        raise Denied("sandbox: reading outside the sandbox directory is blocked: " + full)

    def hook(event, args):
        if event == "open":
            if _type(args[0]) is _int:
                return
            # os.open(..., dir_fd=) is audited without its dir_fd, so no directory outside the
            # sandbox may be opened: a dir_fd can only point inside it.
            (check_write if args[2] & write_flags else check_read)(args[0], True)
        elif event in modifying:
            paths, fds = modifying[event]
            for i, where in _zip(paths, fds, strict=True):
                check_write(args[i], -1 if where < 0 else args[where])
        elif event == "os.listdir" or event == "os.scandir":
            check_read(args[0] if args else None)
        elif event == "os.kill":
            if args[0] != own_pid:
                raise Denied("sandbox: signalling other processes is blocked")
        elif event == "import":
            if args[0] in deny_imports:
                raise Denied("sandbox: importing " + _str(args[0]) + " is blocked")
        elif event == "object.__getattr__":
            # Tracebacks of exceptions raised here lead to this hook's frames and closures.
            if args[1] == "tb_frame":
                raise Denied("sandbox: reading traceback frames is blocked")
        elif event in deny or event.startswith(deny_prefixes):
            raise Denied("sandbox: " + event + " is blocked")

    return hook


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


if __name__ == "__main__":
    if sys.argv[1:2] != ["--zygote"] or len(sys.argv) < 4:
        raise SystemExit("usage: worker.py --zygote SOCKET_FD NETWORK(0|1) [HIDDEN_DIR...]")
    _zygote(int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:])
