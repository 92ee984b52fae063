"""HumanEval+ / MBPP+ scoring: base and plus inputs judged separately against reference outputs
computed in the sandbox, with evalplus's comparison rules, on small evalplus-format files written
here (HUMANEVAL_OVERRIDE_PATH / MBPP_OVERRIDE_PATH), never /work/shared."""

from __future__ import annotations

import json
import sqlite3
import textwrap

import pytest

from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.sandbox import SandboxLimits
from wizardcoder.sandbox.harness import run_check
from wizardcoder.score import reference as reference_mod
from wizardcoder.score.oracle import next_atol, output_matches
from wizardcoder.score.passk import pass_at_k_summary
from wizardcoder.score.plus import DiffSettings, score_samples

LIMITS = SandboxLimits(timeout_s=10, cpu_s=10, memory_mb=512)
QUICK = DiffSettings(memory_mb=1024, min_time_limit_s=1.0)
POLY = ('import math\n\n\ndef poly(xs: list, x: float):\n'
        '    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])\n\n\n')
NEWTON = textwrap.dedent("""\
        dxs = [xs[i] * i for i in range(1, len(xs))]
        x, tol = 0, 1e-5
        for _ in range(1000):
            fx = poly(xs, x)
            if abs(fx) < tol:
                break
            x = x - fx / poly(dxs, x)
        return x
""")
BIG = 3_000_000  # "xy" * BIG is 6 MB: above the 4 MiB reply limit, compared by digest


def _row(task_id, entry, prompt, canonical, base, plus, atol=0):
    return {"task_id": task_id, "prompt": prompt, "entry_point": entry, "contract": "",
            "canonical_solution": canonical, "base_input": base, "plus_input": plus,
            "atol": atol, "test": ""}


HUMANEVAL_PLUS = [
    _row("HumanEval/0", "add", 'def add(a: int, b: int) -> int:\n    """a + b"""\n',
         "    return a + b\n", [[1, 2], [30, 4]], [[-5, 2], [10 ** 30, 1], [0, 0]]),
    _row("HumanEval/1", "mean", 'def mean(xs: list) -> float:\n    """The mean of xs."""\n',
         "    return sum(xs) / len(xs)\n", [[[1.0, 2.0]], [[0.1, 0.2, 0.3]]],
         [[[1e-9, 3.0, 7.25]], [[-2.5] * 10]], atol=1e-3),
    _row("HumanEval/2", "find_zero",
         POLY + 'def find_zero(xs: list):\n    """A zero of poly(xs)."""\n',
         textwrap.indent(NEWTON, "    "), [[[1, 2]], [[-6, 11, -6, 1]]],
         [[[5, 10, -3, 1]], [[-3, 2]], [[1, -1, 0, 1]]], atol=1e-4),
    _row("HumanEval/3", "repeat", 'def repeat(s: str, n: int) -> str:\n    """s, n times."""\n',
         "    return s * n\n", [["ab", 3], ["", 5]], [["xy", BIG], ["z", 0]]),
]
MBPP_PLUS = [
    _row("Mbpp/2", "similar_elements", '"""\nShared elements of two tuples.\n"""\n',
         "def similar_elements(test_tup1, test_tup2):\n"
         "    return tuple(set(test_tup1) & set(test_tup2))\n",
         [[[3, 4, 5, 6], [5, 7, 4, 10]]], [[[11, 12, 14, 13], [17, 15, 14, 13]], [[1], [2]]]),
    _row("Mbpp/3", "is_not_prime", '"""\nIs n not prime?\n"""\n',
         "def is_not_prime(n):\n    if n < 2:\n        return True\n"
         "    return any(n % d == 0 for d in range(2, int(n ** 0.5) + 1))\n",
         [[4], [13], [35]], [[1], [7919], [7917]]),
    _row("Mbpp/787", "text_match_three", '"""\nMatch an a followed by three b.\n"""\n',
         "import re\ndef text_match_three(text):\n    return re.search('ab{3}?', text)\n",
         [["ac"], ["abbbba"]], [["xabbb"], [""], ["abbb abbb"]]),
]


@pytest.fixture()
def plus_files(tmp_path, monkeypatch):
    """Both override files and a private cache directory; returns (humaneval+, mbpp+)."""
    paths = []
    for name, rows in (("HumanEvalPlus.jsonl", HUMANEVAL_PLUS), ("MbppPlus.jsonl", MBPP_PLUS)):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths.append(path)
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(paths[0]))
    monkeypatch.setenv("MBPP_OVERRIDE_PATH", str(paths[1]))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(reference_mod, "_memory", {})
    return paths


def score(name, samples, settings=QUICK):
    problems = load_benchmark(name)
    dataset = {"humaneval+": "humaneval", "mbpp+": "mbpp"}[name]
    return score_samples(problems, samples, LIMITS, dataset, settings, workers=2,
                         progress=False)


def canonical_samples(name):
    return [{"task_id": t, "solution": p["prompt"] + p["canonical_solution"]}
            for t, p in load_benchmark(name).items()]


@pytest.mark.parametrize("name", ["humaneval+", "mbpp+"])
def test_every_canonical_solution_passes_base_and_plus(plus_files, name):
    verdicts = score(name, canonical_samples(name))
    assert [(v.task_id, v.kind, v.plus_kind, v.detail, v.plus_detail) for v in verdicts
            if not (v.passed and v.plus_passed)] == []
    summary = pass_at_k_summary(verdicts, [1])
    assert summary["pass@1"] == summary["plus_pass@1"] == 1.0


def test_base_pass_plus_fail_is_counted_apart(plus_files):
    samples = [
        {"task_id": "HumanEval/0", "completion": "    return abs(a) + abs(b)\n"},
        {"task_id": "HumanEval/1", "completion": "    return round(sum(xs) / len(xs), 4)\n"},
        {"task_id": "HumanEval/1", "completion": "    return round(sum(xs) / len(xs), 1)\n"},
        {"task_id": "HumanEval/3", "completion": "    return s * n if n < 1000 else 'no'\n"},
        {"task_id": "HumanEval/3",
         "completion": "    r = s * n\n    return r if n < 1000 else r[:-1] + '?'\n"},
        {"task_id": "HumanEval/0", "completion": "    return a - b\n"},
    ]
    verdicts = score("humaneval+", samples)
    got = [(v.passed, v.plus_passed) for v in verdicts]
    assert got == [(True, False), (True, True), (True, False), (True, False), (True, False),
                   (False, False)]
    first = verdicts[0]
    assert first.plus_kind == "failed"
    assert first.plus_detail.startswith("plus input 1/3 add(*[-5, 2]) returned 7, expected -3")
    assert "larger output" in verdicts[3].plus_detail  # a small answer where 6 MB are due
    assert "differs" in verdicts[4].plus_detail        # compared by digest
    summary = pass_at_k_summary(verdicts, [1, 2])
    # per task: add 1/2 base, 0/2 plus; mean 2/2, 1/2; repeat 2/2, 0/2
    assert summary["pass@1"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert summary["plus_pass@1"] == pytest.approx((0 + 0.5 + 0) / 3)


def test_find_zero_accepts_any_root_within_atol(plus_files):
    """evalplus 0.3.1 fails every find_zero solution (HumanEval/32); here roots pass."""
    bisection = textwrap.indent(textwrap.dedent("""\
        lo, hi = -1e6, 1e6
        if poly(xs, lo) > 0:
            lo, hi = hi, lo
        for _ in range(200):
            mid = (lo + hi) / 2
            if poly(xs, mid) < 0:
                lo = mid
            else:
                hi = mid
        return lo
        """), "    ")
    samples = [{"task_id": "HumanEval/2", "completion": bisection},
               {"task_id": "HumanEval/2", "completion": "    return 0.5\n"},
               {"task_id": "HumanEval/2", "completion": "    return 'root'\n"}]
    verdicts = score("humaneval+", samples)
    assert [(v.passed, v.plus_passed) for v in verdicts] == [
        (True, True), (False, False), (False, False)]


def test_mbpp_oracles_set_equality_and_not_none(plus_files):
    samples = [
        {"task_id": "Mbpp/2", "solution": "def similar_elements(a, b):\n"
                                          "    return sorted(set(a) & set(b), reverse=True)\n"},
        {"task_id": "Mbpp/2", "solution": "def similar_elements(a, b):\n    return (a[0],)\n"},
        {"task_id": "Mbpp/787", "solution": "def text_match_three(text):\n"
                                            "    return 'abbb' in text\n"},
        {"task_id": "Mbpp/787", "solution": "import re\ndef text_match_three(text):\n"
                                            "    return re.search('abbb', text) or None\n"},
        {"task_id": "Mbpp/787", "solution": "def text_match_three(text):\n    return text\n"},
        {"task_id": "Mbpp/3", "solution": "def is_not_prime(n):\n    return n % 2 == 0 or "
                                          "n % 5 == 0 or n % 7 == 0\n"},
    ]
    verdicts = score("mbpp+", samples)
    assert [(v.passed, v.plus_passed) for v in verdicts] == [
        (True, True), (False, False), (True, True), (True, True), (False, False),
        (True, False)]


def test_evalplus_comparison_rules():
    assert output_matches("humaneval", "f", [], 0.3000001, 0.3, 1e-6)
    assert not output_matches("humaneval", "f", [], 0.31, 0.3, 1e-6)
    assert not output_matches("humaneval", "f", [], 1, 1.5, 1e-3)  # int for float: types
    assert not output_matches("humaneval", "f", [], [0.1], [0.1, 0.2], 1e-3)  # lengths
    assert output_matches("humaneval", "f", [], (1.0, 2.0000001), (1.0, 2.0), 0.0)
    assert not output_matches("humaneval", "f", [], [1.0, 2.0000001], (1.0, 2.0), 0.0)
    assert not output_matches("humaneval", "f", [], 3, 4, 0.0)
    assert output_matches("humaneval", "f", [], [1, 2], [1, 2], 0.0)
    # evalplus's tolerance sticks once an expected output was a float
    assert next_atol("humaneval", "f", 0.5, 0.0) == 1e-6
    assert next_atol("humaneval", "f", 5, 1e-6) == 1e-6
    assert next_atol("humaneval", "f", 5, 0.0) == 0.0
    assert output_matches("mbpp", "sum_div", [7], 0, 1, 0.0)
    assert output_matches("mbpp", "are_equivalent", [1, 2], "anything", True, 0.0)
    assert not output_matches("mbpp", "Diff", [], [[1]], [(1,)], 0.0)  # unhashable: fails
    assert output_matches("humaneval", "find_zero", [[-6, 11, -6, 1]], 3.0, 1.0, 1e-4)


def test_references_are_cached_by_content(plus_files, monkeypatch, tmp_path):
    verdicts = score("humaneval+", canonical_samples("humaneval+")[:2])
    assert all(v.passed and v.plus_passed for v in verdicts)
    db = tmp_path / "cache" / "scoring" / reference_mod.CACHE_FILE
    assert oct(db.parent.stat().st_mode & 0o777) == "0o700"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM refs").fetchone() == (2,)
    monkeypatch.setattr(reference_mod, "_memory", {})

    def no_sandbox_run(*args):
        raise AssertionError("reference recomputed although cached")

    monkeypatch.setattr(reference_mod, "_reference_set", no_sandbox_run)
    again = score("humaneval+", canonical_samples("humaneval+")[:2])
    assert [(v.passed, v.plus_passed) for v in again] == [(True, True)] * 2
    rows = [dict(r, plus_input=r["plus_input"] + [[7, 7]]) if r["task_id"] == "HumanEval/0"
            else r for r in HUMANEVAL_PLUS]  # a changed dataset must not reuse its answers
    plus_files[0].write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AssertionError, match="recomputed"):
        score("humaneval+", canonical_samples("humaneval+")[:1])


HOSTILE = {
    "always-equal object": ("class A:\n  def __eq__(s, o): return True\n"
                            "def add(a, b): return A()", "unserializable"),
    "int subclass": ("class I(int):\n  def __eq__(s, o): return True\n  __hash__ = int.__hash__"
                     "\ndef add(a, b): return I(a + b)", "unserializable"),
    "huge non-builtin": ("class A: pass\ndef add(a, b): return ['x' * (5 << 20), A()]",
                         "unserializable"),
    "sys.exit at import": ("import sys\nsys.exit(0)\ndef add(a, b): return a + b", "error"),
    "os._exit in call": ("import os\ndef add(a, b): os._exit(0)", "crashed"),
    "raise SystemExit": ("def add(a, b): raise SystemExit", "error"),
    "forged reply frames": (
        "import os\ndef add(a, b):\n"
        "  frame = b'{\"ok\":%d}' % (a + b)\n"
        "  for fd in range(3, 64):\n"
        "    try: os.write(fd, len(frame).to_bytes(4, 'big') + frame)\n"
        "    except OSError: pass\n"
        "  return -1", "failed"),
    "forged started frame": (
        "import os\nfor fd in range(3, 64):\n"
        "  try: os.write(fd, b'\\x00\\x00\\x00\\x10{\"started\":true}')\n"
        "  except OSError: pass\n"
        "def add(a, b): return a + b", "crashed"),
    "patched builtins": ("import builtins\nbuiltins.isinstance = lambda *a: True\n"
                         "builtins.type = lambda *a: int\ndef add(a, b): return None",
                         "failed"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_samples_never_pass_plus_tests(plus_files, name):
    program, kind = HOSTILE[name]
    (verdict,) = score("humaneval+", [{"task_id": "HumanEval/0", "solution": program}])
    assert not verdict.passed and not verdict.plus_passed, verdict
    assert (verdict.kind, verdict.plus_kind) == (kind, kind), verdict


def test_slow_input_hits_its_own_time_limit(plus_files):
    program = ("import time\ndef add(a, b):\n    if a < 0:\n        while True: pass\n"
               "    return a + b\n")
    (verdict,) = score("humaneval+", [{"task_id": "HumanEval/0", "solution": program}],
                       DiffSettings(memory_mb=1024, min_time_limit_s=0.5))
    assert verdict.passed and verdict.plus_kind == "timeout", verdict
    assert "input 1/3" in verdict.plus_detail and "time limit of 0.5 s" in verdict.plus_detail
    assert verdict.duration_s < 5


def test_the_reference_cache_is_unreadable_from_the_sandbox(plus_files, tmp_path):
    score("humaneval+", canonical_samples("humaneval+")[:1])
    db = tmp_path / "cache" / "scoring" / reference_mod.CACHE_FILE
    out = tmp_path / "seen.txt"
    problem = {"task_id": "Adv/cache", "prompt": "", "entry_point": "f",
               "test": f"def check(candidate):\n    open({str(out)!r}, 'w').write(candidate())\n"}
    program = (f"def f():\n    try:\n        return open({str(db)!r}, 'rb').read().hex()\n"
               "    except Exception as exc:\n        return repr(exc)\n")
    # Not in the sample's minimal root at all (its /tmp is a fresh tmpfs), hook or not.
    for hook in (True, False):
        run_check(problem, program, LIMITS, audit_hook=hook)
        assert out.read_text().startswith(("PermissionError", "FileNotFoundError")), \
            (hook, out.read_text()[:100])
