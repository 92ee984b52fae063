"""pass@k: the unbiased estimator against hand-computed values, and the summary's k filtering."""

from __future__ import annotations

import math

import pytest

from wizardcoder.sandbox import Verdict
from wizardcoder.score.passk import estimate_pass_at_k, pass_at_k_summary


def _verdicts(per_task: dict[str, list[bool]]) -> list[Verdict]:
    return [Verdict(task, i, ok, "passed" if ok else "failed", "", 0.0)
            for task, results in per_task.items() for i, ok in enumerate(results)]


def test_hand_computed_values():
    assert estimate_pass_at_k([5], [2], 1) == pytest.approx([0.4])
    assert estimate_pass_at_k([5], [0], 1) == [0.0]
    assert estimate_pass_at_k([5], [4], 2) == [1.0]  # n - c < k: every draw of 2 has a pass
    assert estimate_pass_at_k([5], [2], 2) == pytest.approx([1 - 3 / 10])  # 1 - C(3,2)/C(5,2)
    assert estimate_pass_at_k([10, 3], [1, 3], 3) == pytest.approx([0.3, 1.0])


def test_large_n_is_stable():
    # C(2000, 1000) overflows a float; the product form must not.
    (value,) = estimate_pass_at_k([2000], [1], 1000)
    assert value == pytest.approx(0.5)
    (tiny,) = estimate_pass_at_k([200], [1], 1)
    assert tiny == pytest.approx(1 / 200)
    assert not math.isnan(estimate_pass_at_k([10**6], [3], 100)[0])


def test_invalid_inputs():
    with pytest.raises(ValueError):
        estimate_pass_at_k([3], [4], 1)
    with pytest.raises(ValueError):
        estimate_pass_at_k([3], [1], 5)  # fewer samples than k
    with pytest.raises(ValueError):
        estimate_pass_at_k([3], [1], 0)
    with pytest.raises(ValueError):
        estimate_pass_at_k([3, 4], [1], 1)


def test_summary_keeps_only_k_up_to_the_fewest_samples():
    verdicts = _verdicts({"A": [True, False, False, False, True],
                          "B": [False, False, False],
                          "C": [True, True, True, True]})
    summary = pass_at_k_summary(verdicts, [1, 3, 5, 10])
    assert set(summary) == {"pass@1", "pass@3", "tasks", "samples"}
    assert summary["tasks"] == 3 and summary["samples"] == 12
    assert summary["pass@1"] == pytest.approx((2 / 5 + 0 + 1) / 3)
    assert summary["pass@3"] == pytest.approx(((1 - 1 / 10) + 0 + 1) / 3)


def test_summary_of_nothing():
    assert pass_at_k_summary([], [1]) == {"tasks": 0, "samples": 0}


def test_sandbox_errors_are_left_out_of_n_not_counted_as_wrong():
    def v(task, i, kind, plus_kind=None):
        plus = None if plus_kind is None else plus_kind == "passed"
        return Verdict(task, i, kind == "passed", kind, "", 0.0, plus, plus_kind)

    base_only = [v("A", 0, "passed"), v("A", 1, "sandbox_error"), v("A", 2, "failed"),
                 v("B", 0, "sandbox_error")]
    summary = pass_at_k_summary(base_only, [1, 2])
    # A: 1 of 2 judged samples; B has none: left out of the mean, reported
    assert summary == {"pass@1": 0.5, "pass@2": 1.0, "tasks": 2, "samples": 4,
                       "unjudged_tasks": 1}
    with_plus = [v("A", 0, "passed", "passed"), v("A", 1, "passed", "sandbox_error"),
                 v("A", 2, "sandbox_error", "passed"), v("A", 3, "failed", "failed")]
    summary = pass_at_k_summary(with_plus, [1])
    assert summary["pass@1"] == pytest.approx(2 / 3)  # base: samples 0, 1, 3
    assert summary["plus_pass@1"] == 0.5  # plus needs base and plus judged: samples 0, 3
