"""Attacks on the sandbox, as a model rewarded for passing would write them: its file system
(:data:`PROGRAM`), the kernel's refusals once the audit hook is gone (:data:`KERNEL_PROGRAM`),
channels between samples (:data:`REPLAY_PROGRAM`) and memory/inode exhaustion
(:data:`EXHAUST`).

Used in process by ``tests/test_sandbox_fs.py`` and ``tests/test_sandbox_kernel.py`` (as root)
and run as a script by an unprivileged user (``runuser``, with a Python that user can run and
only ``wizardcoder`` on its path), so it imports nothing outside the standard library and
``wizardcoder.sandbox``.

``python sandbox_attacks.py attack SPEC.json`` prints the JSON of :func:`attack`;
``python sandbox_attacks.py isolation MODE [SYSCALLS]`` prints the layers or the refusal of
:func:`wizardcoder.sandbox.pool.require_isolation`; ``python sandbox_attacks.py kernel``
prints the JSON of :func:`kernel_attacks`.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

PATTERN = r"WCSECRET-[0-9a-f]{32}"  # the program searches for this; the secret is never in it

# Every door a candidate could open towards the benchmark (or the scorer's expected answers):
# it returns the secret as soon as one door shows it (that would pass), else what it saw.
PROGRAM = textwrap.dedent(r'''
    import os, re, sys
    SPEC = __SPEC__
    PAT = re.compile(rb"__PATTERN__")
    found, seen = [], {}

    def note(door, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        elif not isinstance(data, bytes):
            data = repr(data).encode()
        match = PAT.search(data)
        if match:
            found.append(match.group().decode())
        seen[door] = "LEAK" if match else data[:160].decode("utf-8", "replace")

    def attempt(door, fn):
        try:
            note(door, fn())
        except BaseException as exc:
            seen[door] = "!" + type(exc).__name__ + ": " + str(exc)[:120]

    def read(path):
        with open(path, "rb") as handle:
            return handle.read(1 << 20)

    def os_read(path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, 1 << 20)
        finally:
            os.close(fd)

    def via_readline(path):
        import readline
        readline.clear_history()
        readline.read_history_file(path)
        return "\n".join(readline.get_history_item(i) or ""
                         for i in range(1, readline.get_current_history_length() + 1))

    def via_sqlite(path):
        import sqlite3
        con = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
        try:
            return repr(con.execute("select * from sqlite_master").fetchall())
        finally:
            con.close()

    def via_ctypes(path):
        import ctypes
        libc = ctypes.CDLL(None)
        fd = libc.open(path.encode(), 0)
        if fd < 0:
            raise OSError("ctypes open failed")
        buf = ctypes.create_string_buffer(1 << 16)
        n = libc.read(fd, buf, 1 << 16)
        return buf.raw[:max(n, 0)]

    def via_mmap(path):
        import mmap
        fd = os.open(path, os.O_RDONLY)
        try:
            return mmap.mmap(fd, 0, prot=mmap.PROT_READ)[:1 << 20]
        finally:
            os.close(fd)

    def exists(path):
        return "exists" if os.path.lexists(path) else "absent"

    def memory(pid):
        out = b""
        with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
            for line in list(maps)[:400]:
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                try:
                    mem.seek(lo)
                    chunk = mem.read(min(hi - lo, 1 << 22))
                except OSError:
                    continue
                match = PAT.search(chunk)
                if match:
                    return match.group()
                out = out or chunk[:16]
        return out

    def fds():
        out = []
        for fd in range(64):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = "?"
            try:
                blocking = os.get_blocking(fd)
                os.set_blocking(fd, False)
            except OSError:
                continue
            try:
                os.lseek(fd, 0, 0)
            except OSError:
                pass
            try:
                data = os.read(fd, 1 << 16)
            except OSError as exc:
                data = repr(exc).encode()
            finally:
                os.set_blocking(fd, blocking)
            out.append(f"{fd}->{target}: ".encode() + data[:64])
        return b"\n".join(out)

    def subprocess_cat(path):
        import subprocess
        return subprocess.run(["cat", path], capture_output=True, timeout=5).stdout

    def subprocess_python(path):
        import subprocess
        return subprocess.run([sys.executable, "-c", "import sys; print(open(sys.argv[1]).read())",
                               path], capture_output=True, timeout=5).stdout

    def listing(path):
        return repr(sorted(os.listdir(path)))

    def walk_everything():
        names, data = [], b""
        for top, dirs, files in os.walk("/"):
            if top == "/":
                dirs[:] = [d for d in dirs if d != "proc"]
            for name in files:
                path = os.path.join(top, name)
                names.append(path)
                if any(w in name for w in ("HumanEval", "humaneval", "Mbpp", "evalplus")):
                    data += b"benchmark-named file: " + path.encode() + b"\n"
                try:
                    chunk = read(path)
                except OSError:
                    continue
                match = PAT.search(chunk)
                if match:
                    data += match.group()
        seen["all_files"] = names
        return data or b"nothing"

    def run_all():
        targets = SPEC["planted"] + SPEC["benchmarks"] + [
            os.environ.get("HUMANEVAL_OVERRIDE_PATH") or "/nonexistent"]
        for path in targets:
            for name, fn in (("open", read), ("os.open", os_read), ("readline", via_readline),
                             ("sqlite3", via_sqlite), ("ctypes", via_ctypes), ("mmap", via_mmap),
                             ("exists", exists), ("cat", subprocess_cat),
                             ("python", subprocess_python)):
                attempt(f"{name}:{path}", lambda fn=fn, path=path: fn(path))
            attempt(f"/proc/self/root:{path}", lambda path=path: read("/proc/self/root" + path))
        for pid in (SPEC["scorer_pid"], os.getppid(), 1):
            for what in ("environ", "cmdline", "status", "maps", "mountinfo"):
                attempt(f"/proc/{pid}/{what}", lambda pid=pid, what=what:
                        read(f"/proc/{pid}/{what}"))
            for what in ("cwd", "root", "fd", "root/tmp", "cwd/.."):
                attempt(f"ls /proc/{pid}/{what}", lambda pid=pid, what=what:
                        listing(f"/proc/{pid}/{what}"))
            attempt(f"/proc/{pid}/mem", lambda pid=pid: memory(pid))
            for path in SPEC["planted"]:
                attempt(f"/proc/{pid}/root:{path}", lambda pid=pid, path=path:
                        read(f"/proc/{pid}/root{path}"))
        attempt("environ", lambda: repr(dict(os.environ)))
        attempt("environ keys", lambda: repr(sorted(os.environ)))
        attempt("fds", fds)
        for path in ["/", "/root", "/home", "/tmp", "/etc", *SPEC["dirs"]]:
            attempt(f"ls {path}", lambda path=path: listing(path))
        attempt("walk /", walk_everything)
        for path in SPEC["writes"]:
            attempt(f"write {path}", lambda path=path: open(path, "w").write("pwned"))

    def f():
        run_all()
        return found[0] if found else repr(seen)
''')

# The benchmark's check, on the trusted side: it passes only if the candidate returned the
# secret (what reading the benchmark would give it), and records what the candidate saw.
CHECK = textwrap.dedent('''
    def check(candidate):
        r = candidate()
        open(__OUT__, "w").write(r if isinstance(r, str) else repr(r))
        assert r == __SECRET__
    ''')


def attack(spec: dict) -> dict:
    """Run :data:`PROGRAM` with and without the audit hook (the OS layers alone); returns, per
    mode, the verdict and what the candidate saw, plus ``control``: what this process (the
    scorer's user, outside the sandbox) reads from the planted files."""
    from wizardcoder.sandbox import SandboxLimits
    from wizardcoder.sandbox.harness import run_check

    public = {k: v for k, v in spec.items() if k in ("planted", "benchmarks", "dirs", "writes")}
    program = PROGRAM.replace("__SPEC__", repr(dict(public, scorer_pid=os.getpid()))) \
        .replace("__PATTERN__", PATTERN)
    assert spec["secret"] not in program
    limits = SandboxLimits(timeout_s=60, cpu_s=60, memory_mb=1024,
                           isolation=spec.get("isolation", "strict"))
    result = {"control": {p: open(p).read() for p in spec["planted"]}, "uid": os.getuid()}
    for hook in (True, False):
        out = os.path.join(spec["out_dir"], f"seen-{int(hook)}.txt")
        problem = {"task_id": "Adv/steal", "prompt": "", "entry_point": "f",
                   "test": CHECK.replace("__OUT__", repr(out))
                                .replace("__SECRET__", repr(spec["secret"]))}
        verdict = run_check(problem, program, limits, audit_hook=hook)
        seen = open(out).read() if os.path.exists(out) else ""
        result["hook" if hook else "no_hook"] = {"passed": verdict.passed, "kind": verdict.kind,
                                                 "detail": verdict.detail, "seen": seen}
    return result


def isolation(mode: str, syscalls: str = "python") -> dict:
    """The layers (best_effort) or the refusal (strict) on this machine."""
    from wizardcoder.errors import WizardcoderError
    from wizardcoder.sandbox.pool import SandboxLimits, require_isolation

    try:
        return {"layers": require_isolation(mode, SandboxLimits(timeout_s=30,
                                                                syscalls=syscalls))}
    except WizardcoderError as exc:
        return {"refused": str(exc), "exit_code": exc.exit_code}


# ------------------------------------------------------------------ the kernel layers

# With the audit hook gone (the worst case: every in-process bypass succeeded), native calls of
# everything a sample must never do. Each entry: "ok" (it worked) or the errno's name. The
# ``would succeed`` ones do succeed without the filter for an unprivileged process.
KERNEL_PROGRAM = textwrap.dedent(r'''
    import ctypes, errno, os, socket, threading
    NR, REFUSED = __NR__, __REFUSED__

    def f():
        libc = ctypes.CDLL(None, use_errno=True)
        out = {}

        def sc(name, *args):
            ctypes.set_errno(0)
            r = libc.syscall(ctypes.c_long(NR[name]),
                             *[a if isinstance(a, ctypes._SimpleCData) or not isinstance(a, int)
                               else ctypes.c_long(a) for a in args])
            if r == 0 and name == "clone":
                os._exit(0)  # a child: only if the layer failed
            return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")

        def py(name, fn):
            try:
                fn()
                out[name] = "ok"
            except OSError as exc:
                out[name] = errno.errorcode.get(exc.errno, str(exc))

        for name in REFUSED:
            out[name] = sc(name, 0, 0, 0, 0, 0, 0)
        buf = ctypes.create_string_buffer(256)
        out["would succeed: unshare(0)"] = sc("unshare", 0)
        out["would succeed: unshare(NEWUSER)"] = sc("unshare", 0x10000000)
        out["would succeed: ptrace(TRACEME)"] = sc("ptrace", 0, 0, 0, 0)
        out["would succeed: shmget(IPC_PRIVATE)"] = sc("shmget", 0, 1 << 20, 0o1600)
        out["would succeed: msgget(IPC_PRIVATE)"] = sc("msgget", 0, 0o1600)
        out["would succeed: semget(IPC_PRIVATE)"] = sc("semget", 0, 1, 0o1600)
        out["would succeed: mq_open"] = sc("mq_open", ctypes.c_char_p(b"wc-mq"), 0o102, 0o600, 0)
        out["would succeed: io_uring_setup"] = sc("io_uring_setup", 4, buf)
        out["would succeed: keyctl(GET_KEYRING_ID)"] = sc("keyctl", 0, -3, 0)
        out["would succeed: clone(NEWUSER|NEWNET)"] = sc("clone", 0x50000000 | 17, 0, 0, 0, 0)
        out["would succeed: seccomp(get action avail)"] = sc("seccomp", 2, 0,
                                                              ctypes.byref(ctypes.c_uint(0)))
        py("would succeed: memfd_create", lambda: os.memfd_create("wc"))
        py("would succeed: socketpair", socket.socketpair)
        for family, kind in ((socket.AF_UNIX, socket.SOCK_STREAM),
                             (socket.AF_INET, socket.SOCK_DGRAM),
                             (socket.AF_INET6, socket.SOCK_STREAM),
                             (socket.AF_NETLINK, socket.SOCK_RAW)):
            py(f"would succeed: socket({family.name}, {kind.name})",
               lambda family=family, kind=kind: socket.socket(family, kind))

        def fork():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

        py("fork", fork)
        threads = []
        worker = threading.Thread(target=lambda: threads.append(1))
        worker.start()
        worker.join()
        out["thread"] = "ok" if threads else "no"
        with open("/proc/self/status") as handle:
            out["status"] = [line.split()[1] for line in handle if line.startswith("Seccomp:")]
        return repr(out)
''')

# A sample learns from earlier samples of the same task if anything survives between them:
# it keeps, in SysV shared memory (or a POSIX one, or a message queue), the answers that a
# following call confirmed (the check only calls again after a passed assertion). Without a
# channel it answers True to everything.
REPLAY_PROGRAM = textwrap.dedent(r'''
    import ctypes, json, os
    KEY, SIZE = 0x57C0DE, 1 << 16

    def channel():
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.shmat.restype = ctypes.c_void_p
            shmid = libc.shmget(KEY, SIZE, 0o1666)
            if shmid < 0:
                raise OSError(ctypes.get_errno(), "shmget")
            addr = libc.shmat(shmid, None, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "shmat")
            return (ctypes.c_char * SIZE).from_address(addr)
        except OSError as exc:
            return str(exc)

    MEM = channel()

    def load():
        if isinstance(MEM, str):
            return {"known": {}, "last": None}
        raw = bytes(MEM).split(b"\0", 1)[0]
        return json.loads(raw) if raw else {"known": {}, "last": None}

    def save(state):
        if not isinstance(MEM, str):
            data = json.dumps(state).encode()[:SIZE - 1] + b"\0"
            ctypes.memmove(MEM, data, len(data))

    STATE = load()
    if STATE["last"] is not None:  # the previous sample's last guess got no further call
        key, guess = STATE["last"]
        STATE["known"][key] = not guess
        STATE["last"] = None

    def __ENTRY__(*args):
        if STATE["last"] is not None:  # a call arrived: the previous answer was right
            key, guess = STATE["last"]
            STATE["known"][key] = guess
        key = repr(args)
        guess = STATE["known"].get(key, True)
        STATE["last"] = [key, guess]
        save(STATE)
        return guess

    CHANNEL = "none: " + MEM if isinstance(MEM, str) else "sysv shm"
''')

# Exhaustion, each bounded by a layer: RUN lists (kind, argument) steps; the program reports
# what it reached before the kernel stopped it (or the cgroup killed it).
EXHAUST = textwrap.dedent(r'''
    import os, sys

    HOLD = []

    def touch(mb):  # 8 MiB at a time, every page written, kept until the sample ends
        start = len(HOLD)
        try:
            for _ in range(mb // 8):
                HOLD.append(b"\x01" * (8 << 20))
        except MemoryError:
            return f"MemoryError after {(len(HOLD) - start) * 8} MiB"
        return (len(HOLD) - start) * 8

    def children(arg):
        count, mb = arg
        pids = []
        for _ in range(count):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                touch(mb)
                os.write(w, b"1")
                import time
                time.sleep(60)
                os._exit(0)
            os.close(w)  # EOF once the child is gone
            pids.append((pid, r))
        return sum(len(os.read(r, 1)) for _, r in pids)

    def tmpfs(mb):  # files of 4 MiB (below the file-size limit) until `mb` are written
        written = 0
        for i in range(0, mb, 4):
            with open(f"big{i}", "wb") as handle:
                handle.write(b"\x02" * (4 << 20))
            written += 4
        return written

    def inodes(count):
        made = 0
        for i in range(count):
            open(f"f{i}", "w").close()
            made += 1
        return made

    def memfd(mb):
        fd = os.memfd_create("fill")
        os.write(fd, b"\x03" * (mb << 20))
        return mb

    def f(steps):
        seen = {}
        for kind, arg in steps:
            try:
                seen[kind] = globals()[kind](arg)
            except OSError as exc:
                seen[kind] = f"{type(exc).__name__}: {exc.strerror}"
            except MemoryError:
                seen[kind] = "MemoryError"
        return repr(seen)
''')


def kernel_program() -> str:
    from wizardcoder.sandbox import seccomp

    return KERNEL_PROGRAM.replace("__NR__", repr(seccomp.X86_64)) \
        .replace("__REFUSED__", repr(seccomp.REFUSED))


def capture(task_id: str, entry: str, args: str, out: str) -> dict:
    """A problem whose trusted check records what the candidate returned, then fails."""
    return {"task_id": task_id, "prompt": "", "entry_point": entry,
            "test": f"def check(candidate):\n    r = candidate({args})\n"
                    f"    open({out!r}, 'w').write(r)\n    assert False, 'captured'\n"}


def kernel_attacks(out_dir: str) -> dict:
    """As this user: what the kernel refuses with the hook off, what one sample's memory and
    tmpfs reach, and the namespaces of three samples of one run."""
    import dataclasses

    from wizardcoder.sandbox import SandboxLimits
    from wizardcoder.sandbox.harness import run_check

    limits = SandboxLimits(timeout_s=30, cpu_s=30, memory_mb=256, tmp_mb=16, tmp_inodes=256)
    result = {"uid": os.getuid()}
    out = os.path.join(out_dir, "kernel.txt")
    verdict = run_check(capture("Adv/kernel", "f", "", out), kernel_program(), limits,
                        audit_hook=False)
    result["kernel"] = {"kind": verdict.kind, "seen": open(out).read()}
    for name, steps, lim in (
            ("memory", [("touch", 1024)], limits),
            ("tmpfs", [("tmpfs", 64)], limits),
            ("inodes", [("inodes", 10_000)], limits),
            ("memfd", [("memfd", 512)], limits),
            ("fork", [("children", (2, 64))], dataclasses.replace(limits, syscalls="toolchain"))):
        out = os.path.join(out_dir, f"{name}.txt")
        verdict = run_check(capture(f"Adv/{name}", "f", repr(steps), out), EXHAUST, lim,
                            audit_hook=False)
        seen = open(out).read() if os.path.exists(out) else ""
        result[name] = {"kind": verdict.kind, "detail": verdict.detail, "seen": seen}
    result["ns"] = live_namespaces(limits, 3)
    return result


def live_namespaces(limits, count: int) -> list[str]:
    """The IPC and network namespaces of `count` samples alive at the same time (a namespace's
    number is reused once it is gone)."""
    from wizardcoder.sandbox.harness import load_program
    from wizardcoder.sandbox.pool import Worker

    program = ("import os\nraise ValueError(repr([os.readlink(f'/proc/self/ns/{n}') "
               "for n in ('ipc', 'net')]))\n")
    workers = [Worker(limits, audit_hook=False).__enter__() for _ in range(count)]
    try:
        return [load_program(worker, program, "f")[1] for worker in workers]
    finally:
        for worker in workers:
            worker.finish()


if __name__ == "__main__":
    if sys.argv[1] == "attack":
        print(json.dumps(attack(json.load(open(sys.argv[2])))))
    elif sys.argv[1] == "kernel":
        print(json.dumps(kernel_attacks(sys.argv[2])))
    else:
        print(json.dumps(isolation(*sys.argv[2:4])))
