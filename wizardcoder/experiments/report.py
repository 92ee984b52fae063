"""`wizardcoder report`: experiments side by side, as self-contained HTML and Markdown.

Experiments come from ``dvc exp show --json`` (the baseline commit and its experiments) plus
the workspace; each one's metrics, plots, decontamination report and per-task results are
read at its revision (git or the DVC cache). The report has pass@k with 95% confidence
intervals (bootstrap over tasks; Wilson for greedy pass@1), data statistics per round, the
elimination and contamination tables, training loss, the linked MLflow parent runs and a
reproducibility record (git revision, dvc.lock output hashes, package versions, hardware).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wizardcoder.config import flatten
from wizardcoder.experiments.report_doc import Doc, environment, git_state, mlflow_parents
from wizardcoder.experiments.report_figures import ALL as FIGURES
from wizardcoder.rounds import VERDICTS, round_number
from wizardcoder.score.intervals import passk_with_ci

log = logging.getLogger(__name__)

METRIC_FILES = ("metrics/seed.json", "metrics/merge.json", "metrics/train.json",
                "metrics/score.json")
DETAILS_DIR = "metrics/details"  # wizardcoder.headline: every figure beyond the headline
DECONTAM = "data/merged/decontamination.json"
RESULTS = "data/eval/results.jsonl"          # one benchmark (before generate.benchmarks)
RESULTS_DIR = "data/eval/results"            # <benchmark>.jsonl each
SCORE = "metrics/score.json"
REMOVAL_REASONS = ("dev_holdout", "empty_output", "exact_duplicate", "near_duplicate",
                   "ngram_overlap", "tfidf_cosine")  # others found in a report are added


@dataclass
class Experiment:
    name: str
    rev: str  # a git sha, or "workspace"
    params: dict = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)  # path -> data
    evolve: dict[str, dict] = field(default_factory=dict)   # round -> metrics/evolve/rN.json
    rounds: list[dict] = field(default_factory=list)        # metrics/rounds.json
    train_curve: list[dict] = field(default_factory=list)
    decontamination: dict | None = None
    results: list[dict] = field(default_factory=list)
    lock_outs: dict[str, str] = field(default_factory=dict)  # out path -> md5
    params_text: str = ""
    passk: dict[int, dict] = field(default_factory=dict)
    passk_plus: dict[int, dict] = field(default_factory=dict)  # HumanEval+ / MBPP+
    benchmark: str | None = None  # whose results the pass@k tables show

    @property
    def n_rounds(self) -> int:
        return len(self.params.get("rounds") or {})

    @property
    def verified(self) -> bool:
        """Evolved with evolve.verify: tests."""
        return (self.params.get("evolve") or {}).get("verify", "none") == "tests"

    def evolve_rounds(self) -> list[tuple[str, dict]]:
        """(round key, metrics/evolve/rN.json) in round order."""
        return sorted(self.evolve.items(), key=lambda item: round_number(item[0]))

    def evolve_total(self, key: str) -> int:
        """A count summed over the rounds' metrics (calls, prompt_tokens...)."""
        return sum(int(d.get(key) or 0) for d in self.evolve.values())

    def metric(self, name: str, key: str) -> Any:
        return (self.metrics.get(f"metrics/{name}.json") or {}).get(key)


# -- collection --------------------------------------------------------------------------

def _run(cmd: list[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def exp_show(root: Path) -> list[dict]:
    """[{name, rev, params, metrics}] from `dvc exp show --json` (baselines + experiments)."""
    out = _run([sys.executable, "-m", "dvc", "exp", "show", "--json"], root)
    if not out:
        return []
    try:
        entries = json.loads(out)
    except json.JSONDecodeError:
        return []
    found = []

    def add(item: dict, name: str | None):
        data = item.get("data") or {}
        params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
        metrics = {p: (v or {}).get("data") or {} for p, v in (data.get("metrics") or {}).items()}
        found.append({"name": name or item.get("name") or item["rev"][:7], "rev": item["rev"],
                      "params": params, "metrics": metrics})

    for base in entries:
        if base.get("rev") == "workspace":
            continue
        add(base, base.get("name"))
        for group in base.get("experiments") or []:
            for rev in group.get("revs") or []:
                add(rev, rev.get("name") or group.get("name"))
    return found


class _Reader:
    """Reads a path in the workspace or at a git revision (git or DVC-tracked)."""

    def __init__(self, root: Path, rev: str):
        self.root, self.rev, self._fs = root, rev, None

    def text(self, path: str) -> str | None:
        try:
            if self.rev == "workspace":
                return (self.root / path).read_text(encoding="utf-8")
            if self._fs is None:
                from dvc.fs import DVCFileSystem

                self._fs = DVCFileSystem(url=str(self.root), rev=self.rev)
            with self._fs.open(path, "rb") as handle:
                return handle.read().decode("utf-8")
        except Exception as exc:  # missing file, file not in the cache, not a repo
            log.debug("report: %s@%s unreadable: %s", path, self.rev, exc)
            return None

    def json(self, path: str) -> Any:
        text = self.text(path)
        try:
            return json.loads(text) if text is not None else None
        except json.JSONDecodeError:
            return None


def _primary_benchmark(exp: Experiment) -> str | None:
    """The benchmark the report's pass@k tables show: with one score entry per benchmark
    (``{"humaneval": {...}, "mbpp": {...}}``) HumanEval if scored, else the first; that
    entry becomes the experiment's ``metrics/score.json``."""
    score = exp.metrics.get(SCORE) or {}
    nested = [k for k, v in score.items() if isinstance(v, dict) and "pass@1" in v]
    if not nested:
        return score.get("benchmark")
    name = "humaneval" if "humaneval" in nested else nested[0]
    exp.metrics[SCORE] = {"benchmark": name, **score[name]}
    return name


def _stage_figures(read: _Reader, path: str) -> dict:
    """A stage's headline metrics (``metrics/X.json``) with its details
    (``metrics/details/X.json``, where the stage wrote one; revisions from before the split
    have every figure in the metrics file)."""
    found = {}
    for part in (path, path.replace("metrics/", f"{DETAILS_DIR}/", 1)):
        if isinstance(data := read.json(part), dict):
            found.update(data)
    return found


def load_experiment(root: Path, name: str, rev: str, params: dict | None = None,
                    n_boot: int = 2000) -> Experiment:
    import yaml

    read = _Reader(root, rev)
    exp = Experiment(name=name, rev=rev)
    exp.params_text = read.text("params.yaml") or ""
    exp.params = params or (yaml.safe_load(exp.params_text) if exp.params_text else {}) or {}
    exp.metrics = {p: d for p in METRIC_FILES if (d := _stage_figures(read, p))}
    for key in exp.params.get("rounds") or {}:
        if data := _stage_figures(read, f"metrics/evolve/{key}.json"):
            exp.evolve[key] = data
    exp.rounds = read.json("metrics/rounds.json") or []
    exp.train_curve = read.json("metrics/train_curve.json") or []
    exp.decontamination = read.json(DECONTAM)
    exp.benchmark = _primary_benchmark(exp)
    text = (read.text(f"{RESULTS_DIR}/{exp.benchmark}.jsonl") if exp.benchmark else None) \
        or read.text(RESULTS) or ""
    exp.results = [json.loads(line) for line in text.splitlines() if line.strip()]
    lock = yaml.safe_load(read.text("dvc.lock") or "") or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            exp.lock_outs[out["path"]] = out.get("md5") or out.get("hash") or "?"
    ks = (exp.params.get("score") or {}).get("ks") or [1]
    exp.passk = passk_with_ci(exp.results, sorted({1, *ks}), n_boot=n_boot)
    if exp.results and all(r.get("plus_passed") is not None for r in exp.results):
        exp.passk_plus = passk_with_ci(exp.results, sorted({1, *ks}), n_boot, plus=True)
    return exp


def collect(root: Path, names: list[str] | None = None, workspace_only: bool = False,
            n_boot: int = 2000) -> list[Experiment]:
    """The workspace plus the baseline(s) and experiments `dvc exp show` lists (those named
    in ``names`` only, when given); the workspace is left out when it repeats one of them."""
    listed = [] if workspace_only else exp_show(root)
    if names:
        listed = [e for e in listed if e["name"] in names or e["rev"].startswith(tuple(names))]
    exps = [load_experiment(root, e["name"], e["rev"], e["params"], n_boot) for e in listed]
    if not names or "workspace" in names:
        ws = load_experiment(root, "workspace", "workspace", None, n_boot)
        same = [e for e in exps if e.params_text == ws.params_text
                and e.metrics == ws.metrics and e.lock_outs == ws.lock_outs]
        has_data = ws.metrics or ws.evolve or ws.rounds or ws.train_curve or ws.results
        if has_data and not same:
            exps.append(ws)
    return exps


# -- the document --------------------------------------------------------------------------

def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _ci(entry: dict | None) -> str:
    if not entry:
        return "-"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _flat_params(params: dict) -> dict[str, Any]:
    """Dotted param keys, empty mappings left out; lists as JSON text, not Python reprs."""
    return {key: json.dumps(value) if isinstance(value, list) else value
            for key, value in flatten(params, keep_empty=False).items()}


def summary_section(doc: Doc, exps: list[Experiment]) -> None:
    doc.h2("Experiments")
    doc.table(["experiment", "revision", "rounds", "train rows", "train loss", "eval loss",
               "tasks", "pass@1 [95% CI]", "greedy pass@1 Wilson CI"],
              [[e.name, e.rev[:10], e.n_rounds, _num(e.metric("merge", "rows")),
                _num(e.metric("train", "train_loss")), _num(e.metric("train", "eval_loss")),
                _num(e.metric("score", "tasks")), _ci(e.passk.get(1)),
                ("[{:.3f}, {:.3f}]".format(*e.passk[1]["wilson"])
                 if 1 in e.passk and "wilson" in e.passk[1] else "-")] for e in exps])
    flats = [_flat_params(e.params) for e in exps]
    keys = sorted({k for f in flats for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    if differ:
        doc.p("Parameters that differ between the experiments:")
        doc.table(["param", *[e.name for e in exps]],
                  [[k, *[_num(f.get(k)) for f in flats]] for k in differ])
    passk_rows = [[e.name, f"{label}pass@{k}", _ci(v), v["method"]]
                  for e in exps for label, table in (("", e.passk), ("plus ", e.passk_plus))
                  for k, v in sorted(table.items())]
    if passk_rows:
        doc.h3("pass@k")
        doc.p("Unbiased pass@k (Chen et al. 2021) per task; interval: 2.5th-97.5th "
              "percentile of the mean over tasks resampled with replacement. plus: the "
              "sample also passes the HumanEval+/MBPP+ tests.")
        doc.table(["experiment", "k", "pass@k [95% CI]", "interval"], passk_rows)


def data_section(doc: Doc, exps: list[Experiment]) -> None:
    doc.h2("Data per round")
    cols = ["rows", "evolved_kept", "evolved_dropped", "instruction_words", "response_words",
            "constraint_terms", "diversity_mean_cosine", "benchmark_similarity"]
    doc.table(["experiment", "round", *cols],
              [[e.name, r.get("round"), *[_num(r.get(c)) for c in cols]]
               for e in exps for r in e.rounds])
    doc.h3("Elimination per rule")
    doc.table(["experiment", "round", "rows in", "kept", "keep rate", *VERDICTS],
              [[e.name, key, d.get("rows_in"), d.get("kept"), _num(d.get("keep_rate")),
                *[(d.get("dropped_by_rule") or {}).get(r, 0) for r in VERDICTS]]
               for e in exps for key, d in e.evolve_rounds()])
    doc.h3("Elimination per method")
    rows = []
    for e in exps:
        for key, d in e.evolve_rounds():
            for method, m in (d.get("by_method") or {}).items():
                if m.get("kept") or m.get("dropped"):
                    rules = {r: n for r, n in (m.get("dropped_by_rule") or {}).items() if n}
                    rows.append([e.name, key, method, m.get("kept", 0), m.get("dropped", 0),
                                 ", ".join(f"{r} {n}" for r, n in rules.items()) or "-"])
    doc.table(["experiment", "round", "method", "kept", "dropped", "dropped by rule"], rows)


def verification_section(doc: Doc, exps: list[Experiment]) -> None:
    """Verified (evolve.verify: tests) beside unverified experiments at the same round
    counts, and the verification figures per round; only when one is verified."""
    if not any(e.verified for e in exps):
        return
    doc.h2("Verification")
    doc.p("Verified experiments keep only answers whose solution passes its own assert-based "
          "tests in the scoring sandbox (evolve.verify: tests). The tests are the model's "
          "own: a wrong expectation the solution shares, or a weak test, passes; see tests "
          "per kept row. Cost: the LLM calls and tokens of every round (retries included).")
    pairs = sorted(exps, key=lambda e: (e.n_rounds, e.verified, e.name))
    doc.table(["experiment", "rounds", "verified", "pass@1 [95% CI]", "train rows",
               "train tokens", "evolve calls", "evolve tokens"],
              [[e.name, e.n_rounds, "yes" if e.verified else "no", _ci(e.passk.get(1)),
                _num(e.metric("merge", "rows")), _num(e.metric("merge", "tokens_est")),
                e.evolve_total("calls"),
                e.evolve_total("prompt_tokens") + e.evolve_total("completion_tokens")]
               for e in pairs])
    rows = []
    for e in exps:
        for key, d in e.evolve_rounds():
            v = d.get("verify")
            if not v:
                continue
            rows.append([e.name, key, v.get("rows_verified"), v.get("kept"),
                         _num(v.get("verified_rate")), _num(v.get("attempts_per_kept")),
                         v.get("eliminated_failed_tests"), v.get("eliminated_no_python"),
                         f"{_num(v.get('tests_per_kept_mean'))} (min "
                         f"{v.get('tests_per_kept_min')}, {v.get('kept_with_one_test')} "
                         f"with one)", _num(v.get("sandbox_rows_per_s"))])
    doc.h3("Verification per round")
    doc.table(["experiment", "round", "answered rows", "passed", "verified rate",
               "attempts / kept", "failed_tests", "no_python", "tests / kept row",
               "sandbox rows/s"], rows)


def contamination_section(doc: Doc, exps: list[Experiment]) -> None:
    doc.h2("Contamination")
    rows, closest = [], []
    found = {r.get("reason") for e in exps for r in (e.decontamination or {}).get("removed", [])}
    columns = [*REMOVAL_REASONS, *sorted(str(r) for r in found - set(REMOVAL_REASONS))]
    for e in exps:
        rep = e.decontamination
        if not rep:
            continue
        reasons = [sum(1 for r in rep.get("removed", []) if r.get("reason") == reason)
                   for reason in columns]
        rows.append([e.name, ", ".join(rep.get("benchmarks", [])) or "-",
                     ", ".join(rep.get("skipped_benchmarks", [])) or "-", *reasons])
        top = sorted(rep.get("closest_training_row", []), key=lambda r: -r.get("cosine", 0))
        closest += [[e.name, r["task_id"], r.get("closest_row"), _num(r.get("cosine"))]
                    for r in top[:5]]
    doc.p("Rows removed by merge, per reason (dev_holdout: the held-out dev tasks; "
          "ngram_overlap and tfidf_cosine: overlap with a benchmark).")
    doc.table(["experiment", "checked", "skipped (file not on disk)", *columns], rows)
    if closest:
        doc.p("Benchmark tasks closest to a kept training row (TF-IDF cosine, top 5):")
        doc.table(["experiment", "benchmark task", "closest training row", "cosine"], closest)


def repro_section(doc: Doc, exps: list[Experiment], root: Path,
                  runs: dict[str, dict]) -> None:
    doc.h2("MLflow runs")
    if runs:
        doc.p("The parent run of each experiment (matched by the sha256 of its params.yaml and "
              "its name; `mlflow ui --backend-store-uri sqlite:///$PWD/mlflow.db`).")
        doc.table(["experiment", "parent run", "pass@1 (MLflow)", "other parents, same params",
                   "UI address"],
                  [[name, r["run_id"], _num(r.get("pass_at_1")), r["others"], r["url"]]
                   for name, r in runs.items()])
    else:
        doc.p("No MLflow parent run found (tracking off, or no mlflow.db).")
    doc.h2("Reproducibility record")
    doc.table(["item", "value"], git_state(root) + environment())
    outs = sorted({p for e in exps for p in e.lock_outs if p.startswith(("data", "models"))})
    if outs:
        doc.p("dvc.lock hashes of the data and model outputs:")
        doc.table(["output", *[e.name for e in exps]],
                  [[p, *[e.lock_outs.get(p, "-") for e in exps]] for p in outs])


def build_report(root: str | Path = ".", out_dir: str | Path = "reports",
                 names: list[str] | None = None, workspace_only: bool = False,
                 use_mlflow: bool = True, n_boot: int = 2000) -> dict[str, Path]:
    """Write report.html (figures inlined) and report.md (+ figures/*.png) to ``out_dir``."""
    root, out_dir = Path(root).resolve(), Path(out_dir)
    exps = collect(root, names, workspace_only, n_boot)
    if not exps:
        from wizardcoder.errors import ConfigError

        raise ConfigError(f"report: no experiment found in {root} (run `dvc repro` first)")
    doc = Doc(f"wizardcoder report: {', '.join(e.name for e in exps)}")
    doc.p(f"{len(exps)} experiment(s) from {root}. Rounds are numbered from 0 (the seed).")
    summary_section(doc, exps)
    for name, caption, draw in FIGURES:
        png = draw(exps)
        if png:
            doc.figure(name, png, caption)
    data_section(doc, exps)
    verification_section(doc, exps)
    contamination_section(doc, exps)
    runs = mlflow_parents(root, exps) if use_mlflow else {}
    repro_section(doc, exps, root, runs)
    paths = doc.write(out_dir)
    log.info("report: %s", ", ".join(str(p) for p in paths.values()))
    return paths
