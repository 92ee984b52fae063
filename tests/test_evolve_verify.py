"""evolve.verify: tests against a real OpenAI-compatible server and the real scoring sandbox.

The fault server answers by content. Markers in a seed instruction choose the answer:
[good] a correct solution with passing tests, [wrong] a wrong solution (every attempt),
[badtests] a correct solution whose tests are wrong, [retry] wrong on the first attempt and
right on the second, [prose] an explanation only, [js] JavaScript, and hostile code that
passes its tests only if it does harm: [passwd] reads the host's /etc/passwd and a planted
file, [plant] overwrites the planted file, [escape] writes outside its tmp, [fork] a fork
bomb, [loop] an infinite loop, [disarm] a wrong solution that would pass by disarming the
tests (an always-equal return value, unittest's assertEqual patched: it passed while solution
and tests shared one interpreter). The kept rows must be exactly [good] and [retry]; the
planted file must be unchanged and nothing written outside.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from pathlib import Path

import pytest
import yaml

from tests.fake_openai import FaultServer, Reply
from tests.test_evolve_engine import EVOLVE, JUDGE, client_for, seed_rows
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError
from wizardcoder.evolve.config import EvolveConfig
from wizardcoder.evolve.engine import evolve_round
from wizardcoder.evolve.prompts import ANSWER_WITH_TESTS_SYSTEM
from wizardcoder.evolve.verify import Attempt, Sandbox, check_attempts, split_program
from wizardcoder.jsonl import write_jsonl
from wizardcoder.sandbox import SandboxLimits

GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(0, 0) == 0\n"
BAD_TESTS = "assert add(1, 2) == 4\n"
HOSTILE_MARKERS = ["[passwd]", "[plant]", "[escape]", "[fork]", "[loop]", "[disarm]"]
MARKERS = ["[good]", "[wrong]", "[badtests]", "[retry]", "[prose]", "[js]", *HOSTILE_MARKERS]
KEPT = {"[good]", "[retry]"}
NO_PYTHON = {"[prose]", "[js]"}


def fenced(code: str) -> str:
    return f"```python\n{code}```"


def hostile(marker: str, planted: Path, outside: Path) -> str:
    """Code that passes its own test only when the harm succeeds."""
    if marker == "[passwd]":
        return (f"def add(a, b):\n    return a + b\n\nDATA = open('/etc/passwd').read() + "
                f"open({str(planted)!r}).read()\nassert 'root' in DATA and 'secret' in DATA\n")
    if marker == "[plant]":
        return (f"def add(a, b):\n    return a + b\n\nopen({str(planted)!r}, 'w')"
                f".write('pwned')\nassert open({str(planted)!r}).read() == 'pwned'\n")
    if marker == "[escape]":
        return (f"def add(a, b):\n    return a + b\n\nopen({str(outside)!r}, 'w').write('x')\n"
                f"assert add(1, 2) == 3\n")
    if marker == "[fork]":
        return "import os\ndef add(a, b):\n    return a + b\n\nwhile True:\n    os.fork()\n"
    if marker == "[disarm]":
        return ("import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n\n"
                "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n\n"
                "def add(a, b):\n    return AlwaysEqual()\n\nassert add(1, 2) == 3\n")
    return "def add(a, b):\n    return a + b\n\nwhile True:\n    pass\nassert add(1, 2) == 3\n"


class Responder:
    """Answers like a model would; [retry]'s first answer per question is wrong."""

    def __init__(self, planted: Path, outside: Path):
        self.planted, self.outside = planted, outside
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        prompt = str(body["messages"][-1]["content"])
        system = str(body["messages"][0]["content"])
        if JUDGE in prompt:
            return Reply("Not Equal")
        if prompt.startswith(EVOLVE):
            return Reply(prompt.split("Question:\n", 1)[1] + " Use integers only.")
        salt = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:6]
        if prompt.startswith("Write tests for the solution"):  # verify_tests: separate
            return Reply(fenced(BAD_TESTS if "[badtests]" in prompt else TESTS))
        inline = system == ANSWER_WITH_TESTS_SYSTEM
        marker = next(m for m in MARKERS if m in prompt)
        if marker == "[prose]":
            return Reply(f"Add the two numbers with the plus operator. ({salt})")
        if marker == "[js]":
            return Reply(f"```javascript\nfunction add(a, b) {{ return a + b; }} // {salt}\n```")
        if marker in HOSTILE_MARKERS:
            return Reply(fenced(hostile(marker, self.planted, self.outside)))
        with self.lock:
            first = prompt not in self.seen
            self.seen.add(prompt)
        code = WRONG if marker == "[wrong]" or (marker == "[retry]" and first) else GOOD
        code += f"# {salt}\n"
        if not inline:
            return Reply(fenced(code))
        return Reply(f"Here is the solution.\n{fenced(code)}\nTests:\n"
                     f"{fenced(BAD_TESTS if marker == '[badtests]' else TESTS)}")


LIMITS = {"timeout_s": 1.0, "cpu_s": 1.0, "memory_mb": 512, "max_procs": 16}  # [loop] waits it out


def run_verified(server, cache, rows, **evolve):
    client = client_for(server, cache)
    config = from_dict(EvolveConfig, {"verify": "tests", "verify_attempts": 2, **evolve},
                       "evolve")
    sandbox = Sandbox(SandboxLimits(**LIMITS, isolation="strict"), workers=2)
    return evolve_round(rows, config, client, "r1", model="fault-model", progress=False,
                        sandbox=sandbox)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache_dir"))
    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")


def _marker(row: dict) -> str:
    return next(m for m in MARKERS if m in row["instruction"])


@pytest.mark.parametrize("tests_mode", ["inline", "separate"])
def test_kept_rows_are_exactly_the_passing_ones_and_a_rerun_sends_nothing(tmp_path,
                                                                           tests_mode):
    planted = tmp_path / "host_secret.txt"
    planted.write_text("secret")
    outside = tmp_path / "escaped.txt"
    rows = seed_rows(MARKERS, plain=0)
    responder = Responder(planted, outside)
    with FaultServer(responder=responder) as server:
        out, rejected, stats = run_verified(server, tmp_path / "c.sqlite", rows,
                                            verify_tests=tests_mode)
        sent = server.total
        out2, rejected2, stats2 = run_verified(server, tmp_path / "c.sqlite", rows,
                                               verify_tests=tests_mode)
        assert server.total == sent  # every attempt came from the cache
    assert out2 == out and rejected2 == rejected
    assert stats2["network_calls"] == 0 and stats2["cache_hits"] == stats["calls"]

    # Harm: the planted host file is unchanged, nothing was written outside the sandbox.
    assert planted.read_text() == "secret"
    assert not outside.exists()

    by_marker = {_marker(r): r for r in rows}
    out_by_parent = {}
    for row in out:
        parent = row["id"] if row.get("carried") else row["lineage"]["parent_id"]
        out_by_parent[parent] = row
    kept = {m for m, r in by_marker.items() if not out_by_parent[r["id"]].get("carried")}
    assert kept == KEPT
    for marker in KEPT:
        child = out_by_parent[by_marker[marker]["id"]]
        assert child["tests"].count("assert") == 3
        verify = child["lineage"]["verify"]
        assert verify["tests"] == 3 and verify["kind"] == "passed"
        assert verify["attempts"] == (2 if marker == "[retry]" else 1)
        assert child["lineage"]["verdicts"]["failed_tests"] == "pass"
        assert "return a + b" in child["output"]
    for marker in set(MARKERS) - KEPT:
        carried = out_by_parent[by_marker[marker]["id"]]
        expected = "no_python" if marker in NO_PYTHON else "failed_tests"
        assert carried["carried_rule"] == expected, marker
    reasons = {r["parent_id"]: r for r in rejected}
    assert reasons[by_marker["[loop]"]["id"]]["verify_detail"]  # the timeout is recorded
    v = stats["verify"]
    assert v["rows_verified"] == len(MARKERS) and v["kept"] == 2
    assert v["eliminated_no_python"] == 2 and v["eliminated_failed_tests"] == len(MARKERS) - 4
    assert v["attempts_per_kept"] == 1.5 and v["attempts"] == 2 * len(MARKERS) - 1
    assert stats["dropped_by_rule"]["failed_tests"] == len(MARKERS) - 4
    assert v["isolation"]["minimal_root"] is True
    assert len(stats["verify_rows"]) == len(MARKERS)
    tests_calls = stats["by_step"]["tests"]["requests"]
    assert tests_calls == (0 if tests_mode == "inline" else v["attempts"] - 4)  # no tests
    # call for the answers without Python (2 rows x 2 attempts)


def test_verify_none_sends_the_plain_answer_and_keeps_every_answer(tmp_path):
    rows = seed_rows(["[wrong]", "[prose]"], plain=0)
    with FaultServer(responder=Responder(tmp_path / "p", tmp_path / "o")) as server:
        client = client_for(server, tmp_path / "c.sqlite")
        out, _, stats = evolve_round(rows, EvolveConfig(), client, "r1", model="m",
                                     progress=False)
        systems = {str(b["messages"][0]["content"]) for b in server.bodies
                   if b["messages"][0]["role"] == "system"}
    assert ANSWER_WITH_TESTS_SYSTEM not in systems
    assert not any(r.get("carried") for r in out) and "verify" not in stats
    assert all(r["lineage"]["verdicts"]["failed_tests"] == "skipped" for r in out)


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="verify"):
        from_dict(EvolveConfig, {"verify": "yes"}, "evolve")
    with pytest.raises(ConfigError, match="verify_attempts"):
        from_dict(EvolveConfig, {"verify_attempts": 0}, "evolve")
    with pytest.raises(ConfigError, match="verify_tests"):
        from_dict(EvolveConfig, {"verify_tests": "both"}, "evolve")


def test_split_counts_tests_of_each_style():
    unittest_style = fenced("import unittest\n" + GOOD + "class T(unittest.TestCase):\n"
                            "    def test_a(self):\n        self.assertEqual(add(1, 2), 3)\n"
                            "        self.assertEqual(add(2, 2), 4)\n"
                            "if __name__ == '__main__':\n    unittest.main()\n")
    functions = fenced(GOOD + "def test_add():\n    assert add(1, 2) == 3\n")
    main_guard = fenced(GOOD + "if __name__ == '__main__':\n    assert add(1, 2) == 3\n")
    assert split_program(unittest_style).test_count == 2
    assert split_program(functions).test_functions == ["test_add"]
    assert split_program(main_guard).test_count == 1
    assert split_program("No code here, just words.") is None
    attempts = [Attempt(unittest_style), Attempt(functions), Attempt(main_guard),
                Attempt(fenced(WRONG + "def test_add():\n    assert add(1, 2) == 3\n")),
                Attempt(fenced(GOOD)), Attempt(fenced(TESTS)),
                Attempt(fenced(GOOD + "def test_add():\n    print(add(1, 2))\n"))]
    check_attempts(attempts, SandboxLimits(**LIMITS), workers=2)
    assert [a.kind for a in attempts] == ["passed", "passed", "passed", "error", "no_tests",
                                          "no_tests", "no_tests"]


def test_stage_and_dry_run_count_the_verification_calls(tmp_path, capsys, monkeypatch):
    from tests.test_evolve_engine import write_params
    from wizardcoder.cli import main

    rows = seed_rows(["[good]", "[wrong]"], plain=0)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data" / "seed.jsonl", rows)
    with FaultServer(responder=Responder(tmp_path / "p", tmp_path / "o")) as server:
        params = write_params(tmp_path / "params.yaml", server.url, verify="tests",
                              verify_attempts=2, verify_tests="separate")
        data = yaml.safe_load(params.read_text())
        data["evolve"].setdefault("sandbox", {}).update(LIMITS)  # verification's own keys
        params.write_text(yaml.safe_dump(data))
        argv = ["evolve", "--params", str(params), "--round", "r1"]
        assert main([*argv, "--dry-run"]) == 0
        cold = capsys.readouterr().out
        assert server.total == 0
        assert main(argv) == 0
        sent = server.total
        capsys.readouterr()
        assert main([*argv, "--dry-run"]) == 0
        warm = capsys.readouterr().out
        assert server.total == sent
    # Per row: one answer sampled again + a tests call per attempt = 3 at most.
    assert "verify calls       at most 6 more" in cold and "0 cached, at most 6 to send" in cold
    # [good] passed at once: its tests call is cached; [wrong]: its second answer and its
    # first tests call are cached, its second tests call's prompt is not known here.
    assert "at most 6 more (evolve.verify: tests, 2 attempt(s), tests separate): 3 cached, " \
           "at most 3 to send" in warm
    metrics = json.loads((tmp_path / "metrics" / "evolve" / "r1.json").read_text())
    out = [json.loads(line) for line in
           (tmp_path / "data" / "evolved" / "r1.jsonl").read_text().splitlines()]
    assert [bool(r.get("carried")) for r in out] == [False, True]
    assert out[0]["tests"].count("assert") == 3
    assert metrics["verify"]["kept"] == 1 and metrics["verify"]["attempts"] == 3
    assert metrics["by_step"]["tests"]["requests"] == 3
    assert [r["verdict"] for r in metrics["verify_rows"]] == ["pass", "failed_tests"]


@pytest.mark.slow
def test_verify_tests_with_the_embedded_model_through_dvc_repro(tmp_path):
    """verify: tests with the bundled 135M model on tiny settings (2 seeds, 1 round), up to
    the evolve stage: every row is either kept with its tests or carried with a verdict,
    and the metrics say how many passed."""
    from tests.workspace import make_repo, run

    repo, env = make_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evolve"].update({"verify": "tests", "verify_attempts": 2,
                             "answer_max_tokens": 160})
    params["evolve"].setdefault("sandbox", {}).update({"timeout_s": 5.0, "cpu_s": 5.0})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git commit -qam verify", repo, env)
    run(f"{sys.executable} -m dvc repro evolve@r1", repo, env, timeout=1800)
    out = [json.loads(line) for line in
           (repo / "data" / "evolved" / "r1.jsonl").read_text().splitlines()]
    details = json.loads((repo / "metrics" / "details" / "evolve" / "r1.json").read_text())
    v = details["verify"]
    assert len(out) == 2 and v["rows_verified"] <= 2
    for row in out:
        if row.get("carried"):
            assert row["carried_rule"] in {"no_python", "failed_tests", "truncated", "empty",
                                           "template_copy", "refusal", "judge_equal"}
        else:
            assert row["lineage"]["verify"]["kind"] == "passed" and "assert" in row["tests"]
    assert v["kept"] == sum(not r.get("carried") for r in out)
    assert v["isolation"]["mode"] == params["evolve"]["sandbox"].get("isolation", "strict")
    # A rerun is a DVC no-op; forced, it sends nothing (every attempt is cached).
    assert "didn't change" in run(f"{sys.executable} -m dvc repro evolve@r1", repo, env) or \
        "up to date" in run(f"{sys.executable} -m dvc status evolve@r1", repo, env)


def test_runs_the_sandbox_failed_stop_the_stage_above_the_tolerance(tmp_path, monkeypatch):
    """A run the sandbox itself failed (a worker that cannot start) is no verdict on the
    answer: above evolve.sandbox.max_sandbox_errors the round stops and writes nothing."""
    import wizardcoder.evolve.verify as verify
    from wizardcoder.errors import ExternalError
    from wizardcoder.evolve.verify_relay import RunResult

    def broken(programs, limits, workers):
        return [RunResult("sandbox_error", "spawn failed", 0.0) for _ in programs]

    monkeypatch.setattr(verify, "run_all", broken)
    rows = seed_rows(["[good]"], plain=0)
    with FaultServer(responder=Responder(tmp_path / "p", tmp_path / "o")) as server:
        with pytest.raises(ExternalError, match=r"failed to run 1 answer.*"
                                                r"max_sandbox_errors = 0\); first: spawn"):
            run_verified(server, tmp_path / "c.sqlite", rows)
        client = client_for(server, tmp_path / "c.sqlite")
        config = from_dict(EvolveConfig, {"verify": "tests", "verify_attempts": 2}, "evolve")
        sandbox = Sandbox(SandboxLimits(**LIMITS), workers=1, max_sandbox_errors=2)
        out, _, stats = evolve_round(rows, config, client, "r1", model="m", progress=False,
                                     sandbox=sandbox)
    assert out[0]["carried_rule"] == "failed_tests" and stats["verify"]["sandbox_errors"] == 2
