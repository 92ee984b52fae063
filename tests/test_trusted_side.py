"""The trusted side under attack: replies built to make the scorer allocate, and answers built
to disarm the tests that verify them (issue 20).

Scorer memory: each attack is a HumanEval+ sample scored through the real sandbox
(:func:`wizardcoder.score.plus.score_samples`) while tracemalloc (which also counts numpy's
buffers) records the scorer's peak; the bound is far below what the same reply cost before
(``numpy.allclose`` of a list of strings builds an array as wide as the longest string times
the list's length). Verification: :func:`wizardcoder.evolve.verify.check_attempts` on answers
that pass their own tests only by changing what the tests see, and on honest answers whose
verdicts must not change.
"""

from __future__ import annotations

import json
import textwrap
import tracemalloc

import pytest

from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.sandbox import SandboxLimits
from wizardcoder.score.oracle import numeric_shape, output_matches
from wizardcoder.score.plus import DiffSettings, score_samples

LIMITS = SandboxLimits(timeout_s=20, cpu_s=20, memory_mb=1024)
QUICK = DiffSettings(memory_mb=1024, min_time_limit_s=5.0)
N = 64  # floats in the reference output
MB = 1 << 20
# name -> (program, memory the same reply needed before this fix, in bytes)
ALLOCATING = {
    # one 4 MB string and N - 1 empty ones: numpy pads every string to the longest
    "wide strings": ("def floats(n):\n    return ['x' * 4_000_000] + [''] * (n - 1)\n",
                     N * 4_000_000 * 4),
    # strings of another shape: one per row of a 2-D list
    "string rows": ("def floats(n):\n    return [['y' * 3_000_000, '']] + [['', '']] * (n - 1)\n",
                    N * 2 * 3_000_000 * 4),
    # (M, 1) against (M,) broadcasts to M * M: reference of M floats, see BROADCAST_N
    "broadcast": ("def floats(n):\n    return [[0.25]] * n\n", 8192 * 8192 * 8 * 3),
}
BROADCAST_N = 8192


def _row(n: int) -> dict:
    return {"task_id": "HumanEval/0", "entry_point": "floats", "contract": "",
            "prompt": 'def floats(n: int) -> list:\n    """n halves."""\n',
            "canonical_solution": "    return [0.5] * n\n",
            "base_input": [[n]], "plus_input": [[3]], "atol": 0, "test": ""}


@pytest.fixture()
def float_task(tmp_path, monkeypatch):
    """A HumanEval+ file whose one task returns a list of floats (compared with evalplus's
    tolerance, through numpy.allclose)."""
    def write(n: int) -> None:
        path = tmp_path / f"HumanEvalPlus-{n}.jsonl"
        path.write_text(json.dumps(_row(n)) + "\n")
        monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(path))
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    return write


def _scored_peak(program: str, settings: DiffSettings = QUICK):
    """(verdict, the scorer's peak traced memory in bytes above its level before)."""
    problems = load_benchmark("humaneval+")
    sample = [{"task_id": "HumanEval/0", "solution": program}]
    score_samples(problems, [{"task_id": "HumanEval/0", "solution": _row(1)["prompt"] +
                              _row(1)["canonical_solution"]}], LIMITS, "humaneval", QUICK,
                  workers=1, progress=False)  # references computed and cached first
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        (verdict,) = score_samples(problems, sample, LIMITS, "humaneval", settings,
                                   workers=1, progress=False)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return verdict, peak


@pytest.mark.parametrize("name", sorted(ALLOCATING))
def test_replies_built_to_allocate_fail_within_a_small_bound(float_task, name):
    program, unbounded = ALLOCATING[name]
    float_task(BROADCAST_N if name == "broadcast" else N)
    verdict, peak = _scored_peak(program)
    assert verdict.kind == "failed" and not verdict.plus_passed, verdict
    bound = 64 * MB  # the reply itself is under 4 MiB
    assert unbounded > 10 * bound
    assert peak < bound, f"{name}: the scorer's peak grew by {peak / MB:.0f} MiB"


def test_the_costliest_reply_to_decode_stays_linear_in_its_size(float_task):
    """4 MiB of empty lists is the reply with the most Python objects per byte (json.loads
    builds ~1.4 million lists, decoding copies them): bounded by the reply's size."""
    float_task(N)
    slow = DiffSettings(memory_mb=1024, min_time_limit_s=30.0)  # tracemalloc slows decoding
    verdict, peak = _scored_peak("def floats(n):\n    return [[] for _ in range(1_390_000)]\n",
                                 slow)
    assert verdict.kind == "failed", verdict
    assert peak < 400 * MB, f"the scorer's peak grew by {peak / MB:.0f} MiB"


def test_honest_float_outputs_keep_their_verdicts(float_task):
    float_task(N)
    problems = load_benchmark("humaneval+")
    samples = [{"task_id": "HumanEval/0", "solution": program} for program in (
        "def floats(n):\n    return [0.5 + 1e-9] * n\n",      # within atol: passes
        "def floats(n):\n    return [0.5] * (n - 1) + [0.6 if n > 3 else 0.5]\n",  # one off
        "def floats(n):\n    return tuple([0.5] * n)\n",      # a tuple for a list: fails
    )]
    verdicts = score_samples(problems, samples, LIMITS, "humaneval", QUICK, workers=2,
                             progress=False)
    assert [(v.kind, v.plus_kind) for v in verdicts] == [
        ("passed", "passed"), ("failed", "passed"), ("failed", "failed")]


# Outputs against references, and what numpy.allclose itself says (None: it raises, which
# evalplus counts as a failed input).
ALLCLOSE_CASES = [
    (["a"], [1.0], None), (["1.0"], [1.0], None), ([1.0], ["1.0"], None),
    ("abc", "abd", None), (("a", 1.0), ("a", 1.0000001), None), ([None, 1.0], [1.0, 1.0], None),
    ([{}], [1.0], None), ({1: 1.0}, {1: 1.000001}, None), ([set()], [{1}], None),
    ([b"a"], [1.0], None), ([[1.0], [2.0, 3.0]], [[1.0], [2.0, 3.1]], None),
    ([1.0, [2.0]], [1.0, 2.0], None), ([1.0, "a"], [1.0, 2.0], None), ([10**400], [1.0], None),
    ([[0.5]] * 3, [0.5, 0.5, 0.5], True), ([2**70], [1.1805916207174113e21], True),
    ([2**70, 1.5], [1.1805916207174113e21, 1.5], True), ([True], [1.0], True),
    ([1 + 0j], [1.0], True), ([[]], [[]], True), ((1.0, 2.0), (1.0, 2.0000001), True),
    ([(1, 2), (3, 4)], [(1, 2), (3, 4.0000001)], True), ([0.5, 0.6], [0.5, 0.5], False),
    (float("nan"), float("nan"), False), (0.3000001, 0.3, True),
    ([[1.0, 2.0]], [[1.0, 2.1]], False),
]


@pytest.mark.parametrize("out, exp, numpy_says", ALLCLOSE_CASES)
def test_checked_comparison_agrees_with_numpy_allclose(out, exp, numpy_says):
    import numpy as np

    try:
        with np.errstate(all="ignore"):
            said = bool(np.allclose(out, exp, rtol=1e-07, atol=1e-6))
    except Exception:
        said = None
    assert said == numpy_says  # the table is numpy 2's behaviour
    assert output_matches("humaneval", "f", [], out, exp, 1e-6) is bool(numpy_says)


def test_numeric_shape_refuses_what_numpy_would_widen():
    assert numeric_shape([[1, 2.0], (3, True)]) == (2, 2)
    assert numeric_shape(1 + 2j) == ()
    assert numeric_shape([]) == (0,)
    for value in (["x"], [[1.0], [1.0, 2.0]], [None], [1.0, [1.0]], {"a": 1.0}, b"ab"):
        assert numeric_shape(value) is None, value
    deep = 0.5
    for _ in range(40):
        deep = [deep]
    assert numeric_shape(deep) is None  # deeper than MAX_DIMS
    assert numeric_shape([0.0] * 10, max_items=5) is None
    text = textwrap.dedent("""no numpy array is built for strings""")
    assert numeric_shape([text] * 3) is None
