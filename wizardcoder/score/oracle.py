"""evalplus 0.3.1's rules for "this output is correct", applied on the trusted side.

A transcription of the per-input body of ``evalplus.eval.unsafe_execute`` (and its special
oracles from ``evalplus/eval/_special_oracle.py``, copied here so that scoring does not import
evalplus, which pulls numpy, psutil and more into the process): exact ``==``; for float outputs
(``is_floats``) or a task ``atol`` > 0, equal types, equal lengths and
``numpy.allclose(out, exp, rtol=1e-07, atol=atol)``; set equality, "not None" and recomputed
answers for a few MBPP tasks; for HumanEval/32 ``find_zero``, ``|poly(xs, out)| <= atol``.

Here ``out`` is a plain value decoded from the sandbox (exact builtin types only, see
``codec.py``), never an object the candidate built, so its ``==`` cannot be forged.

``set(out)`` (MBPP's set-equality oracle) is built by ``codec.bounded_set``: a list of
elements with colliding hashes would make CPython's ``set`` quadratic, so it is refused (a
failed input) or stopped at the sample's deadline (``DecodeTimeout``, a timeout).

Nothing here costs more memory than the reply holds. ``numpy.allclose`` converts its
arguments to arrays, and an array of strings is as wide as its longest string times its
length (a 4 MiB reply of one long string and a million empty ones would be a 16 TB array),
while two shapes that broadcast multiply (``[[x]] * n`` against ``n`` floats: ``n * n``
elements). So before any conversion :func:`numeric_shape` walks both values: only rectangular
lists/tuples of numbers (exact ``int``, ``float``, ``bool``, ``complex``), at most
``MAX_DIMS`` deep and ``codec.MAX_ITEMS`` elements, reach numpy, and only when their
broadcast holds no more elements than the larger of the two (or ``BROADCAST_ITEMS``).
Everything refused is an input on which ``allclose`` raises (strings, bytes, None, dicts,
sets, ragged nesting: evalplus fails the input too), except the one departure: shapes whose
broadcast would be larger than both values and ``BROADCAST_ITEMS`` fail without being
computed (no honest output has another shape than its reference's).

Two deliberate departures, both so that every canonical solution passes its own tests:

* ``find_zero`` (HumanEval/32): evalplus checks the root, then ``continue``s past the line that
  records the input as passed, so *every* solution, the canonical one included, fails
  HumanEval/32 in evalplus 0.3.1. Here a root within ``atol`` passes the input.
* identical encodings (see :func:`wizardcoder.score.plus`) pass before these rules run, so a
  reference output containing NaN (``nan != nan``) does not fail the reference itself.
"""

from __future__ import annotations

import math
import warnings

from wizardcoder.sandbox.codec import MAX_ITEMS, DecodeTimeout, bounded_set

# evalplus/eval/_special_oracle.py
MBPP_OUTPUT_NOT_NONE_TASKS = ("check_str", "text_match_three", "text_starta_endb")
MBPP_OUTPUT_SET_EQ_TASKS = ("similar_elements", "find_char_long", "common_in_nested_lists",
                            "extract_singly", "larg_nnum", "intersection_array",
                            "find_dissimilar", "Diff")
EVALPLUS_FLOAT_ATOL = 1e-6  # "enforce atol for float comparison"
MAX_DIMS = 32  # nesting numpy may convert here (its own limit is 64; deeper is no real output)
_NUMBERS = frozenset((int, float, bool, complex))
BROADCAST_ITEMS = 1 << 16  # elements a broadcast may have beyond the values' own (~1 MB each)


def _surface_area(base_edge, height):  # oracle for Mbpp/581
    slant_height = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 4 * (base_edge * slant_height) / 2)


def _digit_distance_nums(num1, num2):  # oracle for Mbpp/558
    a, b = str(num1), str(num2)
    width = max(len(a), len(b))
    return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width), strict=True))


def _poly(xs: list, x: float):  # oracle for HumanEval/32
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])


def is_floats(x) -> bool:
    """evalplus's test for "compare with a tolerance": a float, or a non-empty list or tuple
    of floats only."""
    if isinstance(x, float):
        return True
    if isinstance(x, list | tuple) and x:
        return all(isinstance(i, float) for i in x)
    return False


def not_none_mode(dataset: str, entry_point: str) -> bool:
    """Tasks whose outputs (``re.Match`` objects) are compared only as "is not None"."""
    return dataset == "mbpp" and entry_point in MBPP_OUTPUT_NOT_NONE_TASKS


def special(dataset: str, entry_point: str) -> bool:
    """Whether the answer for this task is judged by more than the generic rule."""
    return (dataset == "mbpp" and entry_point in (
        "are_equivalent", "sum_div", "surface_Area", "digit_distance_nums",
        *MBPP_OUTPUT_SET_EQ_TASKS)) or (dataset == "humaneval" and entry_point == "find_zero")


class _NotNumeric(Exception):
    pass


def numeric_shape(value, max_items: int = MAX_ITEMS) -> tuple[int, ...] | None:
    """The shape numpy gives ``value`` when it is a number or a rectangular nest of
    lists/tuples of numbers (exact builtin types), at most ``MAX_DIMS`` deep and
    ``max_items`` numbers; else None (a string, None, a dict, ragged nesting...: values that
    numpy turns into string or object arrays, or refuses). Costs one pass over ``value``
    and allocates nothing proportional to it."""
    left = [max_items]

    def shape(v, depth: int) -> tuple[int, ...]:
        t = type(v)
        if t in _NUMBERS:
            return ()
        if (t is not list and t is not tuple) or depth >= MAX_DIMS:
            raise _NotNumeric
        left[0] -= len(v)
        if left[0] < 0:
            raise _NotNumeric
        if _NUMBERS.issuperset(map(type, v)):  # the common flat case, at C speed
            return (len(v),)
        if not v:
            return (0,)
        inner = shape(v[0], depth + 1)
        for item in v[1:]:
            if shape(item, depth + 1) != inner:
                raise _NotNumeric  # ragged: numpy raises ValueError
        return (len(v), *inner)

    try:
        return shape(value, 0)
    except _NotNumeric:
        return None


def _allclose(out, exp, atol: float) -> bool:
    """``numpy.allclose(out, exp)`` when it costs no more memory than the two values hold,
    else False (see the module docstring)."""
    import numpy as np

    shapes = numeric_shape(out), numeric_shape(exp)
    if None in shapes:
        return False  # allclose raises on these (a string, None, a dict, ragged lists...)
    try:
        broadcast = np.broadcast_shapes(*shapes)  # shapes only: allocates no array
    except ValueError:
        return False
    if math.prod(broadcast) > max(BROADCAST_ITEMS, *(math.prod(s) for s in shapes)):
        return False  # the one departure from evalplus: never computed
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return bool(np.allclose(out, exp, rtol=1e-07, atol=atol))


def next_atol(dataset: str, entry_point: str, exp, atol: float) -> float:
    """The tolerance evalplus uses from the next input on. Its loop assigns ``atol = 1e-6``
    the first time an expected output is a float (list), and the assignment sticks for all
    later inputs of the same set; ``find_zero`` skips it (``continue``)."""
    if dataset == "humaneval" and entry_point == "find_zero":
        return atol
    return EVALPLUS_FLOAT_ATOL if atol == 0 and is_floats(exp) else atol


def output_matches(dataset: str, entry_point: str, inp: list, out, exp, atol: float,
                   deadline: float | None = None) -> bool:
    """Whether ``out`` passes for input ``inp`` whose reference output is ``exp``; ``atol`` is
    the tolerance in force for this input (see :func:`next_atol`). Past ``deadline``
    (``time.monotonic``) building ``set(out)`` raises ``codec.DecodeTimeout``."""
    try:
        return _matches(dataset, entry_point, inp, out, exp, atol, deadline)
    except DecodeTimeout:
        raise
    except Exception:  # set() of an unhashable output, abs() of a string...: a failed input
        return False


def _matches(dataset, entry_point, inp, out, exp, atol, deadline) -> bool:
    exact = out == exp
    if dataset == "mbpp":
        if entry_point == "are_equivalent":  # Mbpp/164: any answer is accepted
            exact = True
        elif entry_point == "sum_div":  # Mbpp/295
            exact = exact or out == 0
        elif entry_point == "surface_Area":  # Mbpp/581
            exact = exact or abs(out - _surface_area(*inp)) <= atol
        elif entry_point == "digit_distance_nums":  # Mbpp/558
            exact = exact or out == _digit_distance_nums(*inp)
        elif entry_point in MBPP_OUTPUT_SET_EQ_TASKS:
            exact = bounded_set(out, deadline) == set(exp)
        # MBPP_OUTPUT_NOT_NONE_TASKS: the worker already sent `out is not None` (or the bool)
    if dataset == "humaneval" and entry_point == "find_zero":
        return abs(_poly(*inp, out)) <= atol  # evalplus forgets to record this pass (see top)
    atol = next_atol(dataset, entry_point, exp, atol)
    if not exact and atol != 0:
        if type(out) is not type(exp):
            return False
        if isinstance(exp, list | tuple) and len(out) != len(exp):
            return False
        return _allclose(out, exp, atol)
    return bool(exact)
