"""Attacks on the sandbox's file system, as a model rewarded for passing would write them.

Used in process by ``tests/test_sandbox_fs.py`` (as root) and run as a script by an unprivileged
user (``runuser``, with a Python that user can run and only ``wizardcoder`` on its path), so it
imports nothing outside the standard library and ``wizardcoder.sandbox``.

``python sandbox_attacks.py attack SPEC.json`` prints the JSON of :func:`attack`;
``python sandbox_attacks.py isolation MODE`` prints the layers or the refusal of
:func:`wizardcoder.sandbox.pool.require_isolation`.
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


def isolation(mode: str) -> dict:
    """The layers (best_effort) or the refusal (strict) on this machine."""
    from wizardcoder.errors import WizardcoderError
    from wizardcoder.sandbox.pool import SandboxLimits, require_isolation

    try:
        return {"layers": require_isolation(mode, SandboxLimits(timeout_s=30))}
    except WizardcoderError as exc:
        return {"refused": str(exc), "exit_code": exc.exit_code}


if __name__ == "__main__":
    if sys.argv[1] == "attack":
        print(json.dumps(attack(json.load(open(sys.argv[2])))))
    else:
        print(json.dumps(isolation(sys.argv[2])))
