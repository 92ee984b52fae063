"""Runs one program's compile and run steps in a language's minimal root (untrusted side).

Started by :mod:`wizardcoder.sandbox.toolchain_run` as ``python -s -S -P -B toolchain_exec.py``
with the request as JSON on stdin (the root's layout, the source files, the steps and their
limits); prints one JSON line: each step's exit status, CPU time, wall time, whether it was
killed at its deadline, and its output (capped). No verdict is decided here. Processes:

* launcher (trusted, ours): new mount, IPC and network namespaces (a user namespace first when
  not root; the network namespace has no interface, not even loopback), the minimal root of
  ``rootfs.build`` holding only the toolchain (read-only), then a new PID namespace;
* init (trusted, ours): PID 1 there, not dumpable (no ptrace by a candidate of the same uid);
  mounts a fresh tmpfs as /tmp (the only writable place, its size capped) and a /proc of its
  own, writes the sources, then for each step forks the step process and waits for it with the
  step's wall-clock deadline, then kills every other process in the namespace (``kill(-1)``);
* step (untrusted from exec on): own session, rlimits (CPU, memory, file size, processes,
  descriptors, no core), an unprivileged uid (as root) and no capabilities, no new privileges,
  the kernel's system-call filter (``seccomp.py``'s ``toolchain`` profile: processes and exec,
  no sockets, IPC, namespaces, mounts or ptrace), a scrubbed environment; then execve of the
  compiler or the program.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time

try:  # imported by the trusted side (tests): the package's modules
    from wizardcoder.sandbox import rootfs as _rootfs
    from wizardcoder.sandbox import seccomp as _seccomp
    from wizardcoder.sandbox import worker as _worker
except ImportError:  # the sandbox's script: the files beside this one, by path
    import importlib.util as _util

    def _beside(name):
        spec = _util.spec_from_file_location(
            f"_wizardcoder_{name}", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 f"{name}.py"))
        module = _util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    _worker, _rootfs, _seccomp = _beside("worker"), _beside("rootfs"), _beside("seccomp")
    del _util, _beside

NEWNS, NEWIPC, NEWNET, NEWPID, NEWUSER = 0x20000, 0x8000000, 0x40000000, 0x20000000, 0x10000000
MS_NOSUID, MS_NODEV, MS_RDONLY, MS_NOEXEC = 2, 4, 1, 8
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG = 4, 38, 1


def _isolate(request: dict) -> None:
    """Namespaces and the minimal root; raises OSError where the machine refuses (fail
    closed: the trusted side then reports a sandbox error, never runs the program)."""
    mount, read_only, pivot, umount = _worker.root_syscalls()
    call = _worker.libc_call
    root, uid, gid = os.geteuid() == 0, os.geteuid(), os.getegid()
    call("unshare", NEWNS | NEWIPC | NEWNET | (0 if root else NEWUSER))
    if not root:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
    _rootfs.build(request["new_root"], request["layout"], mount, read_only, pivot, umount)
    call("unshare", NEWPID)


def _step(step: dict, request: dict, out_w: int, err_w: int) -> None:
    """The step process: limits, privilege drop, exec. Never returns."""
    try:
        os.setsid()
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
        mem = int(step["memory_mb"]) << 20
        cpu = max(1, int(step["cpu_s"] + 0.999))
        memory = resource.RLIMIT_DATA if step["memory_rlimit"] == "data" else resource.RLIMIT_AS
        for res, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (memory, (mem, mem)),
                           (resource.RLIMIT_FSIZE, (request["fsize"],) * 2),
                           (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NOFILE, (256, 256)),
                           (resource.RLIMIT_NPROC, (step["nproc"],) * 2)):
            resource.setrlimit(res, value)
        os.closerange(3, 4096)
        _worker.drop_privileges({"uid": request["uid"], "gid": request["gid"]})
        # The kernel's filter for compilers and their programs: processes and exec, but no
        # sockets, IPC, namespaces, mounts or ptrace (seccomp.py's "toolchain" or "jvm").
        _seccomp.install(step["seccomp"])
        os.chdir("/tmp")
        os.execve(step["argv"][0], step["argv"], step["env"])
    except BaseException as exc:
        os.write(2, f"sandbox: the step could not start: {exc!r}\n".encode())
    os._exit(127)


def _run_step(step: dict, request: dict) -> dict:
    """Fork the step, capture its stdout and stderr (each capped), kill it at its deadline."""
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _step(step, request, out_w, err_w)
    os.close(out_w)
    os.close(err_w)
    cap, killed = request["out_cap"], False
    bufs, seen = {out_r: bytearray(), err_r: bytearray()}, {out_r: 0, err_r: 0}
    deadline = started + step["timeout_s"]
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (out_r, err_r, pidfd):
        poller.register(fd, select.POLLIN)

    def drain(fd: int, data: bytes) -> None:
        seen[fd] += len(data)
        bufs[fd] += data
        del bufs[fd][:max(0, len(bufs[fd]) - cap)]

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            killed = True
            os.kill(-1, signal.SIGKILL)  # every process in this PID namespace but init
            break
        events = dict(poller.poll(max(1, int(left * 1000))))
        for fd in (out_r, err_r):
            if fd in events:
                data = os.read(fd, 1 << 16)
                if not data:
                    poller.unregister(fd)
                drain(fd, data)
        if pidfd in events:
            break
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - started
    try:
        os.kill(-1, signal.SIGKILL)  # what the step left running (daemons, children)
    except ProcessLookupError:
        pass
    while True:  # reap what kill(-1) ended (init inherits every orphan)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
        try:
            while (data := os.read(fd, 1 << 16)) and seen[fd] < (1 << 28):
                drain(fd, data)
        except BlockingIOError:
            pass
        os.close(fd)
    os.close(pidfd)
    stdout, stderr = (bufs[fd].decode("utf-8", "replace") for fd in (out_r, err_r))
    return {"status": status, "cpu": usage.ru_utime + usage.ru_stime, "wall": round(wall, 3),
            "timed_out": killed, "stdout": stdout, "stderr": stderr,
            "output": stdout + stderr, "stderr_bytes": seen[err_r]}


def _init(request: dict, report_w: int) -> None:
    """PID 1 of the sample's namespace: /tmp, /proc, the sources, the steps in turn."""
    mount, _, _, umount = _worker.root_syscalls()
    _worker.libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)
    owner = "" if request["uid"] is None else f",uid={request['uid']},gid={request['gid']}"
    mount("none", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={request['tmp_size']},nr_inodes=16384,mode=0700{owner}")
    mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    umount(_rootfs.HOST_PROC, 2)  # MNT_DETACH: the host's processes are gone from view
    for name, text in request["files"].items():
        path = os.path.join("/tmp", name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        if request["uid"] is not None:
            os.chown(path, request["uid"], request["gid"])
    results = []
    for step in request["steps"]:
        results.append(_run_step(step, request))
        if results[-1]["timed_out"] or results[-1]["status"] != 0:
            break  # a failed compile: the program never runs
    os.write(report_w, json.dumps({"steps": results}).encode())
    os._exit(0)


def main() -> None:
    request = json.loads(sys.stdin.read())
    for fd in request.get("cgroup_fds", ()):  # this launcher and all it starts: accounted
        os.write(fd, b"0")
        os.close(fd)
    try:
        _isolate(request)
    except Exception as exc:
        print(json.dumps({"error": f"isolation failed: {type(exc).__name__}: {exc}"}))
        return
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        try:
            _worker.libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _init(request, report_w)
        except BaseException as exc:
            os.write(report_w, json.dumps({"error": f"init failed: {exc!r}"}).encode())
        os._exit(70)
    os.close(report_w)
    chunks = []
    while data := os.read(report_r, 1 << 20):
        chunks.append(data)
    os.waitpid(pid, 0)
    sys.stdout.write((b"".join(chunks) or b'{"error": "init gave no report"}').decode() + "\n")


if __name__ == "__main__":
    main()
