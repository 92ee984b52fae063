"""The trusted side under attack: replies built to make the scorer allocate, and answers built
to disarm the tests that verify them (issue 20).

Scorer memory: each attack is a HumanEval+ sample scored through the real sandbox
(:func:`wizardcoder.score.plus.score_samples`) while tracemalloc (which also counts numpy's
buffers) records the scorer's peak; the bound is far below what the same reply cost before
(``numpy.allclose`` of a list of strings builds an array as wide as the longest string times
the list's length). Verification: :func:`wizardcoder.evolve.verify.check_attempts` on answers
that pass their own tests only by changing what the tests see (each passed the
one-interpreter way, which these tests run too), and on honest answers whose verdicts must
not change; as root and as an unprivileged user.
"""

from __future__ import annotations

import json
import textwrap
import tracemalloc

import pytest

from tests.test_sandbox_fs import planted, user  # noqa: F401  (fixtures)
from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.sandbox import SandboxLimits
from wizardcoder.score.oracle import numeric_shape, output_matches
from wizardcoder.score.plus import DiffSettings, score_samples

LIMITS = SandboxLimits(timeout_s=20, cpu_s=20, memory_mb=1024)
QUICK = DiffSettings(memory_mb=1024, min_time_limit_s=10.0)
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


# Replies costly to decode, each under 4 MiB: (program, what the failure detail quotes).
DECODING = {
    # the most Python objects per byte: json.loads builds ~1.4 million lists, decoding
    # copies them
    "empty lists": ("def floats(n):\n    return [[] for _ in range(1_390_000)]\n",
                    "returned [[], []"),
    # an int of 14 million bits (sent as 3.5 MB of hex)
    "a huge int": ("def floats(n):\n    return [1 << 14_000_000]\n", "returned [<int of"),
    # a set of half a million ints: a hash table built on the trusted side
    "a large set": ("def floats(n):\n    return set(range(500_000))\n", "returned {0, 1"),
}


@pytest.mark.parametrize("name", [  # empty lists: ~35 s under tracemalloc on 2 busy cores
    pytest.param(n, marks=pytest.mark.slow) if n == "empty lists" else n for n in sorted(DECODING)])
def test_replies_costly_to_decode_stay_linear_in_their_size(float_task, name):
    program, quoted = DECODING[name]
    float_task(N)
    slow = DiffSettings(memory_mb=1024, min_time_limit_s=30.0)  # tracemalloc slows decoding
    verdict, peak = _scored_peak(program, slow)
    # judged (a loaded machine may run past the deadline while judging, never before)
    assert verdict.kind in ("failed", "timeout"), verdict
    assert quoted in verdict.detail or "judging the reply" in verdict.detail, verdict
    assert peak < 400 * MB, f"{name}: the scorer's peak grew by {peak / MB:.0f} MiB"


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


# ------------------------------------------------------------------ verification

def _fenced(code: str) -> str:
    return f"```python\n{code}```"


ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"
# Wrong answers that pass their (independently written) tests only by changing what the tests
# see: each passed when solution and tests shared one interpreter.
DISARMING = {
    "always-equal return value": (
        "class AlwaysEqual:\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n"
        "def add(a, b):\n    return AlwaysEqual()\n" + ADD_TESTS),
    "unittest's assertions patched": (
        "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
        "def add(a, b):\n    return 0\n"
        "class TestAdd(unittest.TestCase):\n    def test_add(self):\n"
        "        self.assertEqual(add(1, 2), 3)\n"),
    "builtins.abs and sorted patched": (
        "import builtins\nbuiltins.abs = lambda x: 0\n"
        "builtins.sorted = lambda xs, **k: [1, 2, 3]\n"
        "def mean(xs):\n    return 99.0\ndef order(xs):\n    return xs\n"
        "assert abs(mean([1.0, 2.0]) - 1.5) < 1e-9\n"
        "assert sorted(order([3, 1, 2])) == [1, 2, 3]\n"),
    # invented here: the answer's own abs/sorted, which the tests would call by name
    "builtins shadowed by top-level names": (
        "def abs(x):\n    return 0\ndef sorted(xs, **k):\n    return [1, 2, 3]\n"
        "def mean(xs):\n    return 99.0\ndef order(xs):\n    return xs\n"
        "assert abs(mean([1.0, 2.0]) - 1.5) < 1e-9\n"
        "assert sorted(order([3, 1, 2])) == [1, 2, 3]\n"),
    # invented here: StopIteration from the answer ends the tests' loop before any assert
    "StopIteration ends the tests' loop": (
        "def is_even(n):\n    raise StopIteration\n"
        "def test_is_even():\n    for got, want in zip(map(is_even, [2, 3]), [True, False]):\n"
        "        assert got == want\n"),
    # invented here: unittest.SkipTest from the answer makes the runner skip, not fail
    "unittest.SkipTest raised by the answer": (
        "import unittest\ndef add(a, b):\n    raise unittest.SkipTest('later')\n"
        "class TestAdd(unittest.TestCase):\n    def test_add(self):\n"
        "        self.assertEqual(add(1, 2), 3)\n"),
    # invented here: a result whose arithmetic answers "close" to any expected value
    "a result whose difference is always 0": (
        "class Zero:\n    def __sub__(self, other):\n        return 0.0\n"
        "    __rsub__ = __sub__\n    def __abs__(self):\n        return 0.0\n"
        "    def __contains__(self, item):\n        return True\n"
        "def mean(xs):\n    return Zero()\ndef primes(n):\n    return Zero()\n"
        "assert abs(mean([1.0, 2.0]) - 1.5) < 1e-9\nassert 3 in primes(10)\n"),
}
# Honest answers: (answer, verdict kind); the verdict the one-interpreter way gave is the same
# unless listed in HONEST_BEFORE.
HONEST = {
    "correct": ("def add(a, b):\n    return a + b\n" + ADD_TESTS, "passed"),
    "honestly wrong": ("def add(a, b):\n    return a - b\n" + ADD_TESTS, "error"),
    "several functions and a constant": (
        "import math\nLIMIT = 7\ndef area(r):\n    return math.pi * r * r\n"
        "def double(x):\n    return 2 * x\n"
        "def test_area():\n    assert math.isclose(area(1), math.pi)\n"
        "    assert double(LIMIT) == 14 and double(area(0)) == 0\n", "passed"),
    "a class the tests use": (
        "class Stack:\n    def __init__(self):\n        self.items = []\n"
        "    def push(self, x):\n        self.items.append(x)\n"
        "    def pop(self):\n        return self.items.pop()\n"
        "    def __len__(self):\n        return len(self.items)\n"
        "    def __iter__(self):\n        return iter(self.items)\n"
        "s = Stack()\ns.push(1)\ns.push(2)\nassert len(s) == 2 and list(s) == [1, 2]\n"
        "assert 2 in s and 5 not in s\nassert s.pop() == 2 and s.items == [1]\n"
        "assert isinstance(s, Stack) and str(s).startswith('<')\n", "passed"),
    "a class with a wrong method": (
        "class Counter2:\n    def __init__(self):\n        self.n = 0\n"
        "    def bump(self):\n        self.n += 2\n"
        "c = Counter2()\nc.bump()\nassert c.n == 1\n", "error"),
    "its own exceptions, in unittest": (
        "import unittest\nclass Insufficient(ValueError):\n    pass\n"
        "def withdraw(balance, amount):\n    if amount < 0:\n        raise ValueError('negative')\n"
        "    if amount > balance:\n        raise Insufficient('too much')\n"
        "    return balance - amount\n"
        "class TestWithdraw(unittest.TestCase):\n    def test_withdraw(self):\n"
        "        self.assertEqual(withdraw(5, 2), 3)\n"
        "        with self.assertRaises(Insufficient):\n            withdraw(1, 2)\n"
        "        with self.assertRaises(ValueError):\n            withdraw(1, -1)\n"
        "        self.assertRaises(KeyError, {}.__getitem__, 1)\n", "passed"),
    "a generator": (
        "import itertools\ndef fib():\n    a, b = 0, 1\n    while True:\n        yield a\n"
        "        a, b = b, a + b\n"
        "assert list(itertools.islice(fib(), 6)) == [0, 1, 1, 2, 3, 5]\n", "passed"),
    "a namedtuple and a Counter": (
        "from collections import Counter, namedtuple\nPoint = namedtuple('Point', 'x y')\n"
        "def origin():\n    return Point(0, 0)\ndef letters(s):\n    return Counter(s)\n"
        "assert origin() == (0, 0) and origin().x == 0\n"
        "assert letters('aab') == {'a': 2, 'b': 1}\n", "passed"),
    "a dataclass with its own arithmetic": (
        "from dataclasses import dataclass\n@dataclass\nclass Vec:\n    x: int\n    y: int\n"
        "    def __add__(self, other):\n        return Vec(self.x + other.x, self.y + other.y)\n"
        "assert Vec(1, 2) + Vec(3, 4) == Vec(4, 6)\nassert Vec(1, 2) != Vec(2, 1)\n", "passed"),
    "in-place changes of the tests' arguments": (
        "def sort_in_place(xs):\n    xs.sort()\n"
        "def tally(counts, word):\n    counts[word] = counts.get(word, 0) + 1\n"
        "def rotate(m):\n    m[:] = [list(r) for r in zip(*m[::-1])]\n"
        "a = [3, 1, 2]\nassert sort_in_place(a) is None and a == [1, 2, 3]\n"
        "c = {}\ntally(c, 'x')\ntally(c, 'x')\nassert c == {'x': 2}\n"
        "m = [[1, 2], [3, 4]]\nrotate(m)\nassert m == [[3, 1], [4, 2]]\n", "passed"),
    "a function named like a builtin (MBPP's sum)": (
        "def sum(a, b):\n    return a + b + 1\n"
        "assert sum(10, 15) == 26\n", "passed"),
    "an answer that times out": ("def add(a, b):\n    while True:\n        pass\n" + ADD_TESTS,
                                 "timeout"),
}
# The one-interpreter way failed these honest answers (its program ran as a module missing
# from sys.modules, which dataclasses look up).
HONEST_BEFORE = {"a dataclass with its own arithmetic": "error"}
# Shapes the stand-ins do not support: the tests fail, naming why.
UNSUPPORTED = {
    "a lambda passed to the answer": (
        "def apply(f, x):\n    return f(x)\nassert apply(lambda v: v + 1, 1) == 2\n",
        "passes only plain values"),
    "the answer's object times a plain number": (
        "class Vec:\n    def __init__(self, x):\n        self.x = x\n"
        "    def __mul__(self, k):\n        return Vec(self.x * k)\n"
        "assert (Vec(2) * 3).x == 6\n", "unsupported operand"),
}
VERIFY_LIMITS = SandboxLimits(timeout_s=5, cpu_s=5, memory_mb=512)


def _verify(texts: list[str]):
    from wizardcoder.evolve.verify import Attempt, check_attempts

    attempts = [Attempt(_fenced(t)) for t in texts]
    check_attempts(attempts, VERIFY_LIMITS, workers=2)
    return attempts


def _one_interpreter(texts: list[str]) -> list[str]:
    """The verdicts of the way before: solution and tests loaded by one sandbox worker (as
    bench/verify.py runs it)."""
    from bench.verify import ENTRY, ONE_PROCESS
    from wizardcoder.evolve.verify import Attempt, prepare
    from wizardcoder.sandbox import evaluate_samples

    programs = [prepare(Attempt(_fenced(t))) for t in texts]
    samples = [{"task_id": ONE_PROCESS["task_id"],
                "solution": f"{p.solution}\n\n{p.tests}\ndef {ENTRY}():\n    return True\n"}
               for p in programs]
    return [v.kind for v in evaluate_samples({ONE_PROCESS["task_id"]: ONE_PROCESS}, samples,
                                             VERIFY_LIMITS, workers=2, progress=False)]


def test_answers_that_disarm_their_tests_fail_verification():
    names = sorted(DISARMING)
    texts = [DISARMING[n] for n in names]
    assert _one_interpreter(texts) == ["passed"] * len(names)  # the attacks are real
    got = {n: (a.kind, a.detail) for n, a in zip(names, _verify(texts), strict=True)}
    assert {n: kind for n, (kind, _) in got.items()} == {n: "error" for n in names}, got
    assert all(detail.startswith("the tests failed") for _, detail in got.values()), got


def test_honest_answers_keep_their_verdicts():
    names = sorted(HONEST)
    texts = [HONEST[n][0] for n in names]
    got = {n: a.kind for n, a in zip(names, _verify(texts), strict=True)}
    assert got == {n: HONEST[n][1] for n in names}
    before = dict(zip(names, _one_interpreter(texts), strict=True))
    assert before == {n: HONEST_BEFORE.get(n, HONEST[n][1]) for n in names}


def test_unsupported_shapes_fail_naming_why():
    names = sorted(UNSUPPORTED)
    attempts = _verify([UNSUPPORTED[n][0] for n in names])
    for name, attempt in zip(names, attempts, strict=True):
        assert attempt.kind == "error" and UNSUPPORTED[name][1] in attempt.detail, \
            (name, attempt.detail)


# ------------------------------------------------------------------ an unprivileged user

VERIFY_SCRIPT = """\
import json, sys
from wizardcoder.evolve.verify import Attempt, check_attempts
from wizardcoder.sandbox import SandboxLimits

texts = json.load(open(sys.argv[1]))
attempts = [Attempt(t) for t in texts]
check_attempts(attempts, SandboxLimits(timeout_s=10, cpu_s=10, memory_mb=512,
                                       isolation="best_effort"), workers=2)
print(json.dumps([[a.kind, a.detail] for a in attempts]))
"""


def test_verification_as_an_unprivileged_user(planted, user):  # noqa: F811
    """The same answers verified by a user without privileges (a user namespace instead of
    root's uids): the disarming ones fail, the honest ones keep their verdicts."""
    import subprocess

    name, python, pkg = user
    disarming, honest = sorted(DISARMING), sorted(HONEST)
    texts = [_fenced(DISARMING[n]) for n in disarming] + [_fenced(HONEST[n][0]) for n in honest]
    (pkg / "verify_answers.json").write_text(json.dumps(texts))
    (pkg / "verify_answers.py").write_text(VERIFY_SCRIPT)
    for path in (pkg / "verify_answers.json", pkg / "verify_answers.py"):
        path.chmod(0o644)
    done = subprocess.run(
        ["runuser", "-u", name, "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
         f"PYTHONPATH={pkg}", "LANG=C.UTF-8", python, str(pkg / "verify_answers.py"),
         str(pkg / "verify_answers.json")], capture_output=True, text=True, cwd=str(pkg),
        timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    kinds = [kind for kind, _ in json.loads(done.stdout.splitlines()[-1])]
    assert kinds[:len(disarming)] == ["error"] * len(disarming), kinds
    assert kinds[len(disarming):] == [HONEST[n][1] for n in honest]
