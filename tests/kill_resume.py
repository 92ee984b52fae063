"""The tests' one kill-and-resume helper: SIGKILL a real process at a chosen point, then rerun.

A crash test starts the real process (a stage, a `dvc repro`, a client), waits until it has
reached the point of interest -- ``ready()`` says so, by looking at the cache, the server's
request counts, the checkpoints on disk -- and SIGKILLs it there: no handler runs, no
``finally``, exactly like a lost machine. :func:`kill_when` fails the test with the process's
output if it exits first (it could not be killed where the test says it was) or never gets
there. :func:`finish` waits for a (resumed) run and insists it succeeded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


def output(proc: subprocess.Popen, timeout: float | None = None) -> str:
    """Everything the process wrote to its pipes (stdout, then stderr), once it ended ("" if
    that was read already)."""
    if any(pipe is not None and pipe.closed for pipe in (proc.stdout, proc.stderr)):
        proc.wait(timeout=timeout)
        return ""
    out, err = proc.communicate(timeout=timeout)
    return _text(out) + _text(err)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], *, timeout: float,
             what: str, interval: float = 0.02) -> None:
    """Poll ``ready()`` until true while ``proc`` runs; fail if it exits first or ``timeout``
    seconds pass (``what``: what it never did, for the message)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what}: it exited ({proc.returncode}) first\n"
                        + output(proc)[-4000:])
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout} s")
        time.sleep(interval)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], *, timeout: float = 60,
              what: str = "the process never got that far", group: bool = False,
              interval: float = 0.02) -> str:
    """Wait for ``ready()`` (see :func:`wait_for`), then SIGKILL ``proc`` -- its whole process
    group with ``group=True`` (start it with ``start_new_session=True``: a `dvc repro` and the
    stage it runs) -- and return its output. The process is killed even if the wait fails, and
    must have died of the SIGKILL (not finished before it)."""
    try:
        wait_for(proc, ready, timeout=timeout, what=what, interval=interval)
    finally:
        if proc.returncode is None:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(signal.SIGKILL)
        logs = output(proc, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        "the process ended before it could be killed; make it longer\n" + logs[-3000:])
    return logs


def finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    """Wait for a run to end; it must succeed. Returns its output."""
    logs = output(proc, timeout=timeout)
    assert proc.returncode == 0, logs[-4000:]
    return logs
