"""One sample never takes a scoring run down or stalls it: huge ints (as the candidate's wrong
output and as the reference output), sets and dicts of colliding hashes, forged reply frames and
an exception inside the judge each give that sample a failing verdict, while the other samples
of the same run are judged as usual. Small evalplus-format files written here, never
/work/shared (see test_score_plus)."""

from __future__ import annotations

import json
import time

import pytest

from tests.test_score_plus import HUMANEVAL_PLUS, LIMITS, MBPP_PLUS, QUICK
from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.sandbox.codec import (
    DecodeTimeout,
    OverBudget,
    ProtocolError,
    bounded_set,
    decode_value,
    encode_value,
)
from wizardcoder.sandbox.harness import run_check
from wizardcoder.score import plus as plus_mod
from wizardcoder.score import reference as reference_mod

P = 2**61 - 1  # every multiple of it hashes to 0: a set of them is quadratic to build
BIG_TASK = {"task_id": "HumanEval/4", "prompt": 'def power(n: int) -> int:\n    """10 ** n"""\n',
            "entry_point": "power", "contract": "", "canonical_solution": "    return 10 ** n\n",
            "base_input": [[2], [5000]], "plus_input": [[6000], [7]], "atol": 0, "test": ""}


@pytest.fixture()
def plus_files(tmp_path, monkeypatch):
    """test_score_plus's tasks plus HumanEval/4, whose reference outputs are huge ints."""
    for name, rows, var in (("HumanEvalPlus.jsonl", [*HUMANEVAL_PLUS, BIG_TASK],
                             "HUMANEVAL_OVERRIDE_PATH"),
                            ("MbppPlus.jsonl", MBPP_PLUS, "MBPP_OVERRIDE_PATH")):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        monkeypatch.setenv(var, str(path))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(reference_mod, "_memory", {})


def score(name, samples):
    dataset = {"humaneval+": "humaneval", "mbpp+": "mbpp"}[name]
    return plus_mod.score_samples(load_benchmark(name), samples, LIMITS, dataset, QUICK,
                                  workers=2, progress=False)


def canonical(task_id, name="humaneval+"):
    problem = load_benchmark(name)[task_id]
    return {"task_id": task_id, "solution": problem["prompt"] + problem["canonical_solution"]}


def forge(frame: str) -> str:
    """A candidate that writes its own reply frame on every descriptor it can, then exits
    (so the forged frame is the only reply the trusted side reads)."""
    return ("import os\ndef add(a, b):\n"
            f"    frame = {frame!r}.encode()\n"
            "    for fd in range(3, 64):\n"
            "        try: os.write(fd, len(frame).to_bytes(4, 'big') + frame)\n"
            "        except OSError: pass\n"
            "    os._exit(0)\n")


def colliding(count: int) -> str:
    return "[" + ",".join(str(k * P) for k in range(1, count + 1)) + "]"


def test_huge_int_outputs_are_judged_and_quoted(plus_files):
    samples = [
        {"task_id": "HumanEval/0", "solution": "def add(a, b):\n    return 10 ** 5000\n"},
        canonical("HumanEval/0"),
        canonical("HumanEval/4"),  # huge reference outputs, right answer
        {"task_id": "HumanEval/4",  # huge reference outputs, wrong answer
         "solution": "def power(n):\n    return 10 ** n + (n > 100)\n"},
        {"task_id": "HumanEval/4", "solution": "def power(n):\n    return -1\n"},
        canonical("HumanEval/1"),
    ]
    verdicts = score("humaneval+", samples)
    got = [(v.kind, v.plus_kind) for v in verdicts]
    assert got == [("failed", "failed"), ("passed", "passed"), ("passed", "passed"),
                   ("failed", "failed"), ("failed", "failed"), ("passed", "passed")]
    assert "returned <int of about 5001 digits>, expected 3" in verdicts[0].detail
    assert "input 2/2 power(*[5000]) returned <int of about 5001 digits>, expected <int of " \
           "about 5001 digits>" in verdicts[3].detail
    assert "returned -1, expected <int of about 6001 digits>" in verdicts[4].plus_detail


def test_check_messages_quoting_huge_ints_fail_the_sample_only():
    problem = {"task_id": "Adv/huge", "prompt": "", "entry_point": "f",
               "test": "def check(candidate):\n"
                       "    out = candidate()\n"
                       "    assert out == 1, f'got {out}'\n"
                       "    assert out == 1, out\n"}
    verdict = run_check(problem, "def f():\n    return 10 ** 5000\n", LIMITS)
    assert verdict.kind == "error" and "ValueError" in verdict.detail, verdict
    verdict = run_check(problem, "def f():\n    return 1\n", LIMITS)
    assert verdict.kind == "passed", verdict


# Returned for real, the candidate pays the quadratic cost itself (within its own time limit);
# a forged frame (FORGED below) costs it nothing.
COLLIDING = {
    "set": "{k * (2 ** 61 - 1) for k in range(1, 3001)}",
    "frozenset": "frozenset(k * (2 ** 61 - 1) for k in range(1, 3001))",
    "dict": "{k * (2 ** 61 - 1): 0 for k in range(1, 3001)}",
    "set of tuples": "{(k * (2 ** 61 - 1),) for k in range(1, 3001)}",
}


@pytest.mark.parametrize("what", sorted(COLLIDING))
def test_colliding_outputs_are_refused_quickly(plus_files, what):
    start = time.monotonic()
    samples = [{"task_id": "HumanEval/0",
                "solution": f"def add(a, b):\n    return {COLLIDING[what]}\n"},
               canonical("HumanEval/0")]
    verdicts = score("humaneval+", samples)
    assert [(v.kind, v.plus_kind) for v in verdicts] == [
        ("unserializable", "unserializable"), ("passed", "passed")], verdicts
    assert "one hash value" in verdicts[0].detail
    assert time.monotonic() - start < 30  # unbounded, one such set took minutes


def test_colliding_list_for_the_set_equality_oracle(plus_files):
    """Mbpp/2 is judged by set(out) == set(exp): a list of colliding ints must not stall it."""
    samples = [{"task_id": "Mbpp/2", "solution": "def similar_elements(a, b):\n"
                                                 "    return [k * (2 ** 61 - 1) for k in "
                                                 "range(1, 100001)]\n"},
               canonical("Mbpp/2", "mbpp+")]
    start = time.monotonic()
    verdicts = score("mbpp+", samples)
    assert [(v.kind, v.plus_kind) for v in verdicts] == [("failed", "failed"),
                                                        ("passed", "passed")], verdicts
    assert "returned [2305843009213693951, " in verdicts[0].detail  # decoded, then judged
    assert time.monotonic() - start < 30


FORGED = {
    "not JSON": ("{\"ok\": [1, 2", "crashed"),
    "two keys": ('{"ok": 3, "exc": 1}', "crashed"),
    "unknown tag": ('{"ok": {"$": "evil", "v": 3}}', "crashed"),
    "tag not a string": ('{"ok": {"$": ["set"], "v": [3]}}', "crashed"),
    "bad hex int": ('{"ok": {"$": "int", "v": "0xzz"}}', "crashed"),
    "set of lists": ('{"ok": {"$": "set", "v": [[1], [2]]}}', "crashed"),
    "deep nesting": ('{"ok": ' + "[" * 50000 + "]" * 50000 + "}", "crashed"),
    "nested past the codec's depth": ('{"ok": ' + "[" * 150 + "]" * 150 + "}", "crashed"),
    "NaN constant": ('{"ok": NaN}', "crashed"),
    "huge decimal literal": ('{"ok": ' + "9" * 1_000_000 + "}", "crashed"),  # int() quadratic
    "unknown key": ('{"answer": 3}', "crashed"),
    "colliding set": ('{"ok": {"$": "set", "v": ' + colliding(20000) + "}}", "unserializable"),
    # ~3.8 MiB, just under the reply limit: minutes to build as a plain set()
    "colliding set, 160k elements": ('{"ok": {"$": "frozenset", "v": ' + colliding(160000) +
                                     "}}", "unserializable"),
    "colliding dict": ('{"ok": {"$": "dict", "v": [' +
                       ",".join(f"[{k * P}, 1]" for k in range(1, 20001)) + "]}}",
                       "unserializable"),
    "huge hex int": ('{"ok": {"$": "int", "v": "0x' + "f" * 1_000_000 + '"}}', "failed"),
    "exception with a huge message": ('{"exc": ["ValueError", "' + "x" * 100_000 +
                                      '", true]}', "error"),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_frames_fail_only_their_sample(plus_files, case):
    frame, kind = FORGED[case]
    verdicts = score("humaneval+", [{"task_id": "HumanEval/0", "solution": forge(frame)},
                                    canonical("HumanEval/0")])
    assert [(v.kind, v.plus_kind) for v in verdicts] == [(kind, kind), ("passed", "passed")], \
        verdicts
    assert len(verdicts[0].detail) <= 500


def test_forged_colliding_frame_in_a_check_based_task():
    problem = {"task_id": "Adv/forged", "prompt": "", "entry_point": "add",
               "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}
    frame = '{"ok": {"$": "set", "v": ' + colliding(20000) + "}}"
    start = time.monotonic()
    verdict = run_check(problem, forge(frame), LIMITS)
    assert verdict.kind == "unserializable" and "one hash value" in verdict.detail, verdict
    assert time.monotonic() - start < 20


def test_an_exception_in_the_judge_is_that_samples_verdict(plus_files, monkeypatch):
    """Fault injection: the trusted comparison raises for one output (a scorer bug, or an
    output nobody foresaw); the run goes on and reports it as judge_error."""
    real = plus_mod.output_matches

    def flaky(dataset, entry, inp, out, exp, atol, deadline=None):
        if out == 666:
            raise ValueError("the judge broke")
        return real(dataset, entry, inp, out, exp, atol, deadline)

    monkeypatch.setattr(plus_mod, "output_matches", flaky)
    samples = [canonical("HumanEval/0"),
               {"task_id": "HumanEval/0", "solution": "def add(a, b):\n    return 666\n"},
               {"task_id": "HumanEval/0", "solution": "def add(a, b):\n    return a - b\n"},
               canonical("HumanEval/1")]
    verdicts = score("humaneval+", samples)
    assert [(v.kind, v.plus_kind) for v in verdicts] == [
        ("passed", "passed"), ("judge_error", "judge_error"), ("failed", "failed"),
        ("passed", "passed")]
    assert "could not judge the reply: ValueError: the judge broke" in verdicts[1].detail


def test_codec_budgets():
    ok = {"a": {1, 2, (3, frozenset({4}))}, (1, 2): [None, 1.5, b"x", 1j, 10**5000]}
    assert decode_value(json.loads(encode_value(ok, 1 << 30))) == ok
    with pytest.raises(OverBudget, match="one hash value"):
        decode_value(json.loads(encode_value({k * P for k in range(1, 100)}, 1 << 30)))
    assert decode_value(json.loads(encode_value({k * P for k in range(1, 17)}, 1 << 30)))
    with pytest.raises(OverBudget, match="more than 1000 elements"):
        decode_value(list(range(1001)), max_items=1000)
    with pytest.raises(DecodeTimeout):
        decode_value({"$": "set", "v": list(range(100_000))}, time.monotonic() - 1)
    with pytest.raises(OverBudget):
        bounded_set([k * P for k in range(1, 100)])
    assert bounded_set("abca") == {"a", "b", "c"}
    deep: list = []
    for _ in range(150):
        deep = [deep]
    for bad in ({"$": "dict", "v": [[1]]}, {"$": "float", "v": [1]}, {"$": "x", "v": 1, "y": 2},
                {"$": {"a": 1}, "v": 1}, {"$": "set", "v": [[1]]}, deep):
        with pytest.raises(ProtocolError):
            decode_value(bad)
