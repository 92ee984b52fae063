"""Run a whole program of a MultiPL-E language in the sandbox and classify it as MultiPL-E does
(trusted side).

Each program gets a fresh launcher (``toolchain_exec.py``: namespaces, the language's
read-only minimal root from :mod:`~.toolchains`, a tmpfs /tmp, an unprivileged uid per
concurrent program), a cgroup of its own (:mod:`~.cgroup`: its processes' memory and number
together) and its compile and run steps their own wall-clock, CPU and memory budgets
(:class:`ToolchainLimits`). The verdict comes from exit statuses and output only, with
MultiPL-E's own rules per language (its ``eval_<lang>.py`` scripts): ``OK``, ``Exception``,
``SyntaxError`` (a failed compile, or the runtime's parse error), ``Timeout``; a program the
sandbox could not run is ``sandbox_error`` (never a verdict on the code).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from wizardcoder.errors import ExternalError
from wizardcoder.sandbox import cgroup
from wizardcoder.sandbox.toolchains import Toolchain, layout, require

EXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toolchain_exec.py")
PY_FLAGS = ("-s", "-S", "-P", "-B")
STATUSES = ("OK", "Exception", "SyntaxError", "Timeout")
SANDBOX_ERROR = "sandbox_error"
_FIRST_UID = 1_700_000_000  # private uids, apart from the Python workers' (zygote.py)
MAX_SLOTS = 64


@dataclass(frozen=True)
class ToolchainLimits:
    """Budgets of one program: the compile step and the run step each have their own."""

    compile_timeout_s: float = 30.0
    compile_memory_mb: int = 2048
    run_timeout_s: float = 15.0
    run_memory_mb: int = 1024
    max_procs: int = 256       # per uid: JVMs, Go and node run many threads
    max_file_mb: int = 64
    max_output_kb: int = 64


@dataclass(frozen=True)
class ProgramResult:
    status: str                # one of STATUSES, or SANDBOX_ERROR
    detail: str                # output tail / why the sandbox failed
    duration_s: float
    exit_code: int | None = None


class _Slots:
    def __init__(self, size: int):
        self.free, self.cond = list(range(size)), threading.Condition()

    def acquire(self) -> int:
        with self.cond:
            self.cond.wait_for(lambda: self.free)
            return self.free.pop(0)

    def release(self, slot: int) -> None:
        with self.cond:
            self.free.append(slot)
            self.cond.notify()


_slots = _Slots(MAX_SLOTS)


def _uid(slot: int) -> int | None:
    if os.geteuid() != 0:
        return None  # a user namespace with the caller's uid, no capabilities
    return _FIRST_UID + MAX_SLOTS * (os.getpid() % (1 << 20)) + slot


def _steps(tool: Toolchain, limits: ToolchainLimits) -> list[dict]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": "/tmp",
           "TMPDIR": "/tmp", **tool.env}
    steps = []
    if tool.compile:
        steps.append({"argv": tool.argv(tool.compile), "env": env,
                      "timeout_s": limits.compile_timeout_s,
                      "cpu_s": 4 * limits.compile_timeout_s,
                      "memory_mb": limits.compile_memory_mb, "nproc": limits.max_procs,
                      "memory_rlimit": tool.memory_rlimit, "seccomp": tool.seccomp})
    # `go test` compiles and runs in one step: it gets both budgets.
    timeout = limits.run_timeout_s + (limits.compile_timeout_s if tool.builds_in_run else 0)
    memory = max(limits.run_memory_mb, limits.compile_memory_mb if tool.builds_in_run else 0)
    steps.append({"argv": tool.argv(tool.run), "env": env, "timeout_s": timeout,
                  "cpu_s": 4 * timeout, "memory_mb": memory,
                  "nproc": limits.max_procs, "memory_rlimit": tool.memory_rlimit,
                  "seccomp": tool.seccomp})
    return steps


def run_program(language: str, program: str, limits: ToolchainLimits) -> ProgramResult:
    """Compile and run ``program`` (a whole file: prompt + completion + tests) in the
    sandbox. Raises ToolchainMissing when the language's toolchain is not installed."""
    tool = require(language)
    root_layout = layout(language)
    # One cgroup per program (cgroup.py): the memory and processes of all its processes
    # together, tmpfs pages included; None where the machine has none (see require_cgroup).
    group = cgroup.create((max(limits.compile_memory_mb, limits.run_memory_mb) + 64) << 20,
                          limits.max_procs + 4)
    slot = _slots.acquire()
    new_root = tempfile.mkdtemp(prefix="wc-toolchain-root-")
    started = time.monotonic()
    uid = _uid(slot)
    request = {"layout": root_layout, "new_root": new_root, "uid": uid, "gid": uid,
               "files": {tool.source: program}, "steps": _steps(tool, limits),
               "tmp_size": 4 * limits.max_file_mb << 20, "fsize": limits.max_file_mb << 20,
               "out_cap": limits.max_output_kb << 10,
               "cgroup_fds": list(group.fds) if group else []}
    budget = sum(s["timeout_s"] for s in request["steps"]) + 60
    try:
        done = subprocess.run([sys.executable, *PY_FLAGS, EXEC], input=json.dumps(request),
                              capture_output=True, text=True, timeout=budget, cwd="/",
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                              start_new_session=True, pass_fds=request["cgroup_fds"])
        report = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() \
            else {"error": f"no report (exit {done.returncode}): {done.stderr[-400:]}"}
    except (subprocess.TimeoutExpired, ValueError, OSError) as exc:
        report = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        _slots.release(slot)
        shutil.rmtree(new_root, ignore_errors=True)
        usage = group.destroy() if group else {}
    took = time.monotonic() - started
    if "error" in report or not report.get("steps"):
        return ProgramResult(SANDBOX_ERROR, str(report.get("error", "no steps ran"))[-400:], took)
    result = classify(language, report["steps"], bool(tool.compile), took)
    if usage.get("oom_kills"):
        result = dataclasses.replace(result, detail=f"{result.detail} [out of memory: the "
                                     f"program's cgroup killed a process]")
    return result


def require_cgroup(isolation: str) -> None:
    """Strict isolation needs a cgroup per program (compilers and programs start several
    processes: per-process limits alone do not bound them together); best_effort runs with
    rlimits only."""
    found = cgroup.support()
    if found.version is None and isolation == "strict":
        raise ExternalError(f"score.isolation is strict, but {found.reason}: {cgroup.HINT}")


def _exit_code(step: dict) -> int:
    return os.waitstatus_to_exitcode(step["status"])


def classify(language: str, steps: list[dict], compiled: bool, took: float) -> ProgramResult:
    """MultiPL-E's status from the steps' exit statuses and output (its eval_<lang>.py)."""
    if compiled:
        build = steps[0]
        if build["timed_out"] or build["status"] != 0:
            # MultiPL-E's Rust evaluator calls a compiler timeout a Timeout; the others see a
            # non-zero exit status: a SyntaxError.
            status = "Timeout" if build["timed_out"] and language == "rs" else "SyntaxError"
            return ProgramResult(status, build["output"][-600:], took,
                                 None if build["timed_out"] else _exit_code(build))
        if len(steps) < 2:
            return ProgramResult(SANDBOX_ERROR, "the program did not run", took)
    step = steps[-1]
    out, code = step["output"], None if step["timed_out"] else _exit_code(step)
    if step["timed_out"]:
        # MultiPL-E's PHP evaluator has no Timeout: a killed `php` is a non-zero exit.
        status = "Exception" if language == "php" else "Timeout"
    elif language == "go":  # `go test`: the build is part of the run step
        status = "SyntaxError" if ("[setup failed]" in out or "[build failed]" in out) else \
            "Exception" if "FAIL" in out or code != 0 else "OK"
    elif code == 0:
        status = "OK"
    elif language in ("js", "ts") and "SyntaxError" in out and "ERR_ASSERTION" not in out:
        status = "SyntaxError"
    elif language == "php" and "PHP Parse error" in step["stdout"]:
        status = "SyntaxError"
    elif language == "sh" and "syntax error" in out:
        status = "SyntaxError"
    elif language == "rb" and step.get("stderr_bytes", 1) > 0:
        status = "SyntaxError"  # MultiPL-E's Ruby evaluator: any message on stderr
    else:
        status = "Exception"
    return ProgramResult(status, out[-600:], took, code)
