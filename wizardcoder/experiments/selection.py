"""Evol-stop on a held-out dev set: pick the number of evolution rounds from finished
experiments, never from the reported benchmark.

Input is what ``dvc exp show --json`` prints. The candidates are the baseline commit and its
experiments that differ from it *only* in the `rounds` mapping (so a seed-only baseline, a
method ablation or another learning rate never competes), finished without error, with the
dev metric in ``metrics/dev_score.json`` on the configured dev set. The highest dev score
wins; scores within ``select.tolerance`` of the best are ties, and ties go to fewer rounds.
Every candidate and every experiment left out is recorded with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wizardcoder.config import flatten
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.experiments.config import SelectConfig
from wizardcoder.rounds import validate_rounds

DEV_METRICS = "metrics/dev_score.json"
TEST_METRICS = "metrics/score.json"
PARAMS_FILE = "params.yaml"
EPSILON = 1e-12


@dataclass
class Entry:
    """One row of `dvc exp show`: the baseline commit or one of its experiments."""

    name: str
    rev: str
    timestamp: str
    state: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    error: str | None = None


def _entry(rev_info: dict, state: str) -> Entry:
    data = rev_info.get("data") or {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
    metrics = {path: (m or {}).get("data") or {} for path, m in
               (data.get("metrics") or {}).items()}
    error = rev_info.get("error")
    return Entry(name=rev_info.get("name") or rev_info.get("rev", "")[:7],
                 rev=rev_info.get("rev", ""), timestamp=data.get("timestamp") or "",
                 state=state, params=params, metrics=metrics,
                 error=(error.get("msg") or str(error)) if isinstance(error, dict) else error)


def workspace_entry(show: list) -> Entry | None:
    """The workspace row of ``dvc exp show --json``, if it has one."""
    for commit in show if isinstance(show, list) else []:
        if commit.get("rev") == "workspace":
            entry = _entry(commit, "workspace")
            entry.name = "workspace"
            return entry
    return None


def _reported(entry: Entry) -> dict[str, dict]:
    """Benchmark -> its reported score: ``metrics/score.json`` holds one benchmark's keys
    (``benchmark``, ``pass@1``...) or an entry per benchmark (generate.benchmarks)."""
    test = entry.metrics.get(TEST_METRICS) or {}
    if "benchmark" in test:
        return {test["benchmark"]: test}
    return {k: v for k, v in test.items() if isinstance(v, dict)}


def _dev(entry: Entry) -> dict:
    """The dev score of an entry by its score keys: the headline's keys carry ``dev_``
    (``dev_pass@1``, so `dvc exp show` needs no file prefix)."""
    return {k.removeprefix("dev_"): v for k, v in (entry.metrics.get(DEV_METRICS) or {}).items()}


def parse_exp_show(show: list) -> tuple[Entry, list[Entry]]:
    """(baseline commit, its experiments) from ``dvc exp show --json`` (first commit shown)."""
    if not isinstance(show, list):
        raise DataError("dvc exp show --json", None, None, "expected a JSON list of commits")
    for commit in show:
        if commit.get("rev") == "workspace":
            continue
        baseline = _entry(commit, "committed")
        experiments = []
        for exp in commit.get("experiments") or []:
            revs = exp.get("revs") or []
            state = (exp.get("executor") or {}).get("state") or "success"
            if revs:
                experiments.append(_entry(revs[0], state))
        return baseline, experiments
    raise DataError("dvc exp show --json", None, None, "no commit found (commit first)")


def _param_diff(a: dict, b: dict) -> list[str]:
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb)
                  if fa.get(k) != fb.get(k) and not k.startswith("rounds."))


def _exclusion(entry: Entry, baseline: Entry, select: SelectConfig) -> str | None:
    if entry.error or entry.state not in ("success", "committed"):
        return f"not finished successfully (state {entry.state}{', error' if entry.error else ''})"
    differs = _param_diff(entry.params, baseline.params)
    if differs:
        return "differs from the baseline commit in more than rounds: " + ", ".join(differs)
    if (entry.params.get("merge") or {}).get("baseline", "none") != "none":
        return "merge.baseline is not 'none' (a baseline, not an evolved set)"
    dev = _dev(entry)
    if select.metric not in dev:
        return f"no {DEV_METRICS}:{select.metric}"
    if dev.get("benchmark") != select.dev_benchmark:
        return (f"dev score is on {dev.get('benchmark')!r}, not select.dev_benchmark="
                f"{select.dev_benchmark!r}")
    if dev.get("benchmark") in _reported(entry):
        return f"dev set {dev.get('benchmark')!r} is the reported benchmark: not held out"
    try:
        validate_rounds(entry.params.get("rounds"), f"{entry.name}: params.yaml")
    except ConfigError as exc:
        return str(exc)
    return None


def select_rounds(show: list, select: SelectConfig) -> dict:
    """The round-selection record (see the module doc); raises DataError without candidates."""
    baseline, experiments = parse_exp_show(show)
    candidates: list[dict] = []
    excluded: list[dict] = []
    for entry in [baseline, *experiments]:
        reason = _exclusion(entry, baseline, select)
        if reason:
            excluded.append({"experiment": entry.name, "rev": entry.rev, "reason": reason})
            continue
        dev = _dev(entry)
        test = entry.metrics.get(TEST_METRICS) or {}
        if "benchmark" not in test and (reported := _reported(entry)):
            # One entry per benchmark: HumanEval's, else the first, is what is shown.
            name = "humaneval" if "humaneval" in reported else next(iter(reported))
            test = {"benchmark": name, **reported[name]}
        candidates.append({
            "rounds": len(entry.params.get("rounds") or {}), "experiment": entry.name,
            "rev": entry.rev, "timestamp": entry.timestamp, "dev_score": float(dev[select.metric]),
            "dev_tasks": dev.get("tasks"),
            "reported_not_used": {k: test[k] for k in ("benchmark", select.metric, "tasks")
                                  if k in test}})
    # One candidate per round count: the most recent experiment (the others are reruns).
    latest: dict[int, dict] = {}
    for cand in sorted(candidates, key=lambda c: c["timestamp"]):
        if cand["rounds"] in latest:
            old = latest[cand["rounds"]]
            excluded.append({"experiment": old["experiment"], "rev": old["rev"],
                             "reason": f"superseded by {cand['experiment']} (same round count, "
                                       "newer)"})
        latest[cand["rounds"]] = cand
    ranked = sorted(latest.values(), key=lambda c: c["rounds"])
    if not ranked:
        raise DataError("dvc exp show --json", None, None,
                        f"no finished experiment with {DEV_METRICS}:{select.metric} that "
                        f"differs from the baseline commit only in rounds; run e.g. "
                        f"`wizardcoder exp grid --rounds 1 2 3 --run` first")
    best = max(c["dev_score"] for c in ranked)
    tied = [c for c in ranked if c["dev_score"] >= best - select.tolerance - EPSILON]
    chosen = min(tied, key=lambda c: c["rounds"])
    for cand in ranked:
        cand["chosen"] = cand is chosen
    return {
        "chosen_rounds": chosen["rounds"], "chosen_experiment": chosen["experiment"],
        "chosen_rev": chosen["rev"], "dev_benchmark": select.dev_benchmark,
        "metric": select.metric, "tolerance": select.tolerance, "best_dev_score": best,
        "tied_rounds": [c["rounds"] for c in tied],
        "rule": (f"highest {select.metric} on the held-out dev set {select.dev_benchmark!r} "
                 f"({DEV_METRICS}); scores within {select.tolerance} of the best are ties and "
                 f"ties go to fewer rounds. The reported benchmark ({TEST_METRICS}) is listed "
                 f"for reading only and was not used."),
        "baseline_rev": baseline.rev, "candidates": ranked, "excluded": excluded,
    }


def format_selection(record: dict) -> str:
    metric = record["metric"]
    lines = [f"{'rounds':>6}  {'experiment':<24} {'dev ' + metric:>12}  {'reported':>10}"]
    for cand in record["candidates"]:
        reported = cand["reported_not_used"].get(metric)
        lines.append(f"{cand['rounds']:>6}  {cand['experiment'][:24]:<24} "
                     f"{cand['dev_score']:>12.4f}  "
                     f"{'-' if reported is None else f'{reported:.4f}':>10}"
                     f"{'  <- chosen' if cand['chosen'] else ''}")
    for item in record["excluded"]:
        lines.append(f"  left out {item['experiment']}: {item['reason']}")
    lines.append(f"chosen: {record['chosen_rounds']} round(s) ({record['chosen_experiment']}); "
                 f"rule: {record['rule']}")
    return "\n".join(lines)
