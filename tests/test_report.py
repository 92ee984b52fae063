"""`wizardcoder report` on a real git + DVC repository whose single stage writes the
pipeline's metrics files (same shapes as the real stages, no model): a baseline run and a
`dvc exp run` experiment, compared side by side; and `dvc plots show` rendered offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wizardcoder.experiments import report
from wizardcoder.score import intervals

REPO = Path(__file__).resolve().parents[1]
TASKS = 10

FAKE_STAGE = '''
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
rounds = list(p["rounds"])
n = len(rounds)
rules = ["truncated", "empty", "template_copy", "judge_equal", "refusal", "no_python",
         "failed_tests", "request_error"]  # wizardcoder.evolve.filters.VERDICTS
methods = ["add_constraints", "rarer_requirement", "more_reasoning", "erroneous_code",
           "higher_complexity"]
def dump(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    json.dump(data, open(path, "w"), indent=1)
dump("metrics/seed.json", {"rows": 4, "rows_read": 4})
# Every record has the same keys (DVC plots read a list only when they do).
per_round = [{"round": 0, "rows": 4, "evolved_kept": 0, "evolved_dropped": 0,
              **{f"dropped_{r}": 0 for r in rules}, **{f"kept_{m}": 0 for m in methods},
              "instruction_words": 10.0, "response_words": 30.0,
              "constraint_terms": 0.5, "diversity_mean_cosine": 0.2,
              "benchmark_similarity": 0.1}]
for i, key in enumerate(rounds, 1):
    by_method = {m: {"kept": 1 if j < 3 else 0, "dropped": 1 if j == 3 else 0,
                     "dropped_by_rule": {r: int(j == 3 and r == "truncated") for r in rules}}
                 for j, m in enumerate(methods)}
    # The pipeline's split: the headline (a DVC metric) and the details (an output).
    dump(f"metrics/evolve/{key}.json", {f"{key}_kept": 3, f"{key}_calls": 8,
                                        f"{key}_tokens": 900, f"{key}_cost_usd": 0.0})
    dump(f"metrics/details/evolve/{key}.json", {
        "round": key, "rows_in": 4, "kept": 3, "dropped": 1, "keep_rate": 0.75,
        "dropped_by_rule": {r: int(r == "truncated") for r in rules}, "by_method": by_method,
        "calls": 8})
    per_round.append({"round": i, "rows": 3, "evolved_kept": 3, "evolved_dropped": 1,
                      **{f"dropped_{r}": int(r == "truncated") for r in rules},
                      **{f"kept_{m}": int(j < 3) for j, m in enumerate(methods)},
                      "instruction_words": 10.0 + 5 * i, "response_words": 30.0 + 4 * i,
                      "constraint_terms": 0.5 + i, "diversity_mean_cosine": 0.2 - 0.02 * i,
                      "benchmark_similarity": 0.1 + 0.01 * i})
dump("metrics/rounds.json", per_round)
dump("metrics/rounds_verify.json", [])   # evolve.verify: none
dump("metrics/merge.json", {"rows": 4 + 3 * n, "tokens_est": 500 * n})
dump("metrics/details/merge.json", {"rows": 4 + 3 * n, "removed": 1, "rounds": n})
lr = p["train"]["learning_rate"]
dump("metrics/train_curve.json", [{"step": s, "loss": 2.0 / s + lr, "learning_rate": lr}
                                  for s in range(1, 6)])
dump("metrics/train_curve_eval.json", [{"step": s, "eval_loss": 2.5 / s + lr}
                                       for s in (2, 4)])
dump("metrics/train.json", {"train_loss": 0.4 + lr, "eval_loss": 0.5})
passed = [t < 2 + 3 * n for t in range(TASKS)]
with open("data/eval/results.jsonl", "w") as f:
    for t, ok in enumerate(passed):
        f.write(json.dumps({"task_id": f"HumanEval/{t}", "sample_index": 0, "passed": ok,
                            "kind": "passed" if ok else "failed", "detail": "",
                            "duration_s": 0.1}) + "\\n")
dump("metrics/score.json", {"benchmark": "humaneval", "pass@1": sum(passed) / TASKS})
dump("metrics/details/score.json", {"benchmark": "humaneval", "pass@1": sum(passed) / TASKS,
                                    "tasks": TASKS, "samples": TASKS})
dump("metrics/passk_rounds.json", [{"rounds": n, "training_data": "evolved",
                                    "pass_at_1": sum(passed) / TASKS}])
dump("metrics/dev_passk_rounds.json", [{"rounds": n, "training_data": "evolved",
                                        "pass_at_1": 0.5}])
dump("data/merged/decontamination.json", {
    "removed": [{"id": "x", "round": 1, "reason": "tfidf_cosine",
                 "benchmark_task": "HumanEval/3", "score": 0.91}],
    "closest_training_row": [{"task_id": f"HumanEval/{t}", "closest_row": "seed-1",
                              "cosine": round(0.1 * t, 2)} for t in range(TASKS)],
    "benchmarks": ["humaneval"], "skipped_benchmarks": ["mbpp"]})
'''.replace("TASKS", str(TASKS))

DVC_YAML = {"stages": {"pipeline": {
    "cmd": "python fake_stage.py",
    "deps": ["fake_stage.py"],
    "params": ["rounds", "train", "score"],
    # As in the project's dvc.yaml: plot data and details are plain outputs (the top-level
    # plots draw them), metrics hold the headline.
    "outs": ["data/eval/results.jsonl", "data/merged/decontamination.json",
             *({p: {"cache": False}} for p in (
                 "metrics/passk_rounds.json", "metrics/dev_passk_rounds.json",
                 "metrics/details", "metrics/seed.json", "metrics/rounds.json",
                 "metrics/rounds_verify.json", "metrics/train_curve.json",
                 "metrics/train_curve_eval.json"))],
    "metrics": [{p: {"cache": False}} for p in (
        "metrics/evolve", "metrics/merge.json", "metrics/train.json", "metrics/score.json")]}}}


def sh(cmd: str, cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    """Baseline commit (1 round) + experiment `two-rounds` (2 rounds, higher pass@1)."""
    repo = tmp_path_factory.mktemp("report") / "repo"
    (repo / "data/eval").mkdir(parents=True)
    (repo / "metrics/run_facts").mkdir(parents=True)  # a plot of the project reads it
    (repo / "metrics/run_facts/train_speed.json").write_text(
        json.dumps([{"step": s, "tokens_per_s": 100.0 + s} for s in range(1, 6)]))
    (repo / "fake_stage.py").write_text(FAKE_STAGE)
    shutil.copytree(REPO / "configs/plots", repo / "configs/plots")  # plots template + vega
    (repo / "params.yaml").write_text(yaml.safe_dump({
        "rounds": {"r1": "data/seed.jsonl"}, "train": {"learning_rate": 0.01},
        "score": {"ks": [1, 10]}}, sort_keys=False))
    project_dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump({**DVC_YAML, "plots": project_dvc["plots"]},
                                                  sort_keys=False))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "WIZARDCODER_MLFLOW": "0"}
    for key in ("DVC_ROOT", "WIZARDCODER_ROOT", "MLFLOW_TRACKING_URI", "DVC_EXP_NAME"):
        env.pop(key, None)
    dvc = f"{sys.executable} -m dvc"
    sh(f"git init -q && {dvc} init -q && {dvc} config core.analytics false", repo, env)
    config = (REPO / ".dvc/config").read_text()  # the project's plots section, as committed
    (repo / ".dvc/config").write_text((repo / ".dvc/config").read_text()
                                      + config[config.index("[plots]"):])
    sh(f"{dvc} repro -q && git add -A && git commit -qm baseline", repo, env)
    sh(f"{dvc} exp run -q -n two-rounds -S '+rounds.r2=data/evolved/r1.jsonl'", repo, env)
    return repo, env


def test_wilson_and_bootstrap_intervals():
    low, high = intervals.wilson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    assert intervals.wilson(0, 10)[0] == 0.0 and intervals.wilson(10, 10)[1] == 1.0
    rows = [{"task_id": f"t{t}", "passed": t < 3} for t in range(10)]
    ci = intervals.passk_with_ci(rows, [1, 10])
    assert list(ci) == [1]  # pass@10 needs 10 samples per task
    assert ci[1]["value"] == pytest.approx(0.3)
    assert 0.0 <= ci[1]["low"] < 0.3 < ci[1]["high"] <= 0.7
    assert ci[1]["wilson"] == pytest.approx(intervals.wilson(3, 10))
    many = [{"task_id": f"t{t}", "passed": s < t} for t in range(5) for s in range(4)]
    ci = intervals.passk_with_ci(many, [1, 2, 4])
    assert sorted(ci) == [1, 2, 4] and "wilson" not in ci[1]
    assert ci[4]["value"] == pytest.approx(4 / 5)  # tasks 1..4 have a passing sample
    plus = [{"task_id": f"t{t}", "passed": t < 6, "plus_passed": t < 2} for t in range(10)]
    assert intervals.passk_with_ci(plus, [1])[1]["value"] == pytest.approx(0.6)
    assert intervals.passk_with_ci(plus, [1], plus=True)[1]["value"] == pytest.approx(0.2)


def test_report_compares_baseline_and_experiment(dvc_repo, tmp_path):
    repo, _ = dvc_repo
    paths = report.build_report(repo, tmp_path / "out", n_boot=200)
    html = paths["html"].read_text()
    md = paths["md"].read_text()
    # both experiments, side by side, with their own pass@1 (2+3n of 10 tasks pass)
    summary = md.split("## Experiments")[1].split("##")[0]
    assert re.search(r"\| two-rounds \| \w{10} \| 2 \| 10 \|.*\| 0\.800 \[", summary)
    assert re.search(r"\| (master|main) \| \w{10} \| 1 \| 7 \|.*\| 0\.500 \[", summary)
    assert "| rounds.r2 | - | data/evolved/r1.jsonl |" in md  # the params that differ
    # figures: inlined in the HTML, files next to the Markdown
    for name in ("passk", "passk_rounds", "rounds", "elimination", "methods", "train_loss"):
        assert f'id="fig-{name}"' in html and f"](figures/{name}.png)" in md
        assert (tmp_path / "out/figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert html.count("data:image/png;base64,") == 6 and "<script" not in html
    # tables: per round, elimination per rule and method, contamination
    assert "| two-rounds | r2 | 4 | 3 | 0.75 | 1 | 0 | 0 | 0 | 0 |" in md
    assert "| two-rounds | r1 | erroneous_code | 0 | 1 | truncated 1 |" in md
    assert "| two-rounds | humaneval | mbpp | 0 | 0 | 0 | 0 | 0 | 1 |" in md
    assert "| two-rounds | HumanEval/9 | seed-1 | 0.9 |" in md
    # reproducibility record
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    assert f"| git revision | {head} |" in md
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for o in lock["stages"]["pipeline"]["outs"]
               if o["path"] == "data/eval/results.jsonl")
    assert "| data/eval/results.jsonl | " in md and md5 in md
    for package in ("torch", "transformers", "dvc", "mlflow", "deepspeed", "evalplus",
                    "llama-cpp-python"):
        assert re.search(rf"\| {package} \| [\w.+]+ \|", md), package
    for item in ("CPU", "cores", "RAM", "GPU"):
        assert f"| {item} | " in md


def test_report_of_a_single_workspace_run(dvc_repo, tmp_path):
    repo, env = dvc_repo
    out = subprocess.run([sys.executable, "-m", "wizardcoder", "report", "--workspace-only",
                          "--out-dir", str(tmp_path / "ws"), "--bootstrap", "100",
                          "--no-mlflow"], cwd=repo, env={**env, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    md = (tmp_path / "ws/report.md").read_text()
    assert "# wizardcoder report: workspace" in md
    assert "| workspace | workspace | 2 |" in md and "| git revision |" in md
    assert str(tmp_path / "ws/report.html") in out.stdout


def test_report_without_any_run_says_so(tmp_path):
    from wizardcoder.errors import WizardcoderError

    with pytest.raises(WizardcoderError, match="no experiment found"):
        report.build_report(tmp_path, tmp_path / "out", workspace_only=True)


def _x_encoding(spec: dict) -> dict:
    return (spec.get("encoding") or spec.get("spec", {}).get("encoding") or {}).get("x", {})


def test_dvc_plots_show_draws_only_dvc_yaml_charts_with_whole_round_axes(dvc_repo, tmp_path):
    """`dvc plots show`: the charts dvc.yaml defines and no other (no default chart of a
    plot file such as metrics/rounds.json against its row index, no second throughput
    chart); no chart for a feature that is off (verification with evolve.verify: none);
    every chart against rounds ticks at whole rounds only."""
    repo, env = dvc_repo
    defined = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    ids = [next(iter(p)) for p in defined]
    shown = json.loads(sh(f"{sys.executable} -m dvc plots show --json", repo, env))["data"]
    assert set(shown) == set(ids)
    drawn = {name: charts for name, charts in shown.items() if charts}
    off = {"verification per round", "rows eliminated by tests"}   # evolve.verify: tests
    assert set(drawn) == set(ids) - off
    throughput = [n for n, c in drawn.items() if "tokens_per_s" in json.dumps(c)]
    assert throughput == ["training throughput"]
    by_round = [next(iter(p)) for p in defined if next(iter(p.values())).get("x") == "round"]
    assert len(by_round) >= 6
    for name in by_round:
        for chart in shown[name]:
            assert _x_encoding(chart["content"])["type"] == "ordinal", name
    out = tmp_path / "plots"
    sh(f"{sys.executable} -m dvc plots show -o {out}", repo, env)
    page = (out / "index.html").read_text()
    # A chart without data is an empty spec: nothing drawn, not even its title or axes.
    assert page.count("var spec = {};") == len(off)
    assert page.count("vegaEmbed('#") - page.count("var spec = {};") == len(drawn)
    assert "answers passing their own tests" not in page


def test_plots_template_is_configured_and_self_contained():
    config = (REPO / ".dvc/config").read_text()
    assert "html_template = ../configs/plots/template.html" in config
    text = (REPO / "configs/plots/template.html").read_text()
    assert "{plot_divs}" in text and "<script src=" not in text
    for lib in ("vega@5.20.2", "vega-lite@5.2.0", "vega-embed@6.18.2"):
        assert f'data-lib="{lib}"' in text and lib in text.split("-->")[0]
    assert text.count("Redistribution and use in source and binary forms") == 3


def test_verification_section_compares_verified_and_unverified():
    """Verified experiments beside unverified ones at the same round count: pass@1 with its
    interval, rows, tokens; then the verification figures per round."""
    from wizardcoder.experiments.report import Experiment, passk_with_ci, verification_section
    from wizardcoder.experiments.report_doc import Doc
    from wizardcoder.experiments.report_figures import verified_vs_unverified

    def exp(name, verify, passed):
        e = Experiment(name=name, rev="abc",
                       params={"rounds": {"r1": "data/seed.jsonl"},
                               "evolve": {"verify": verify}})
        e.results = [{"task_id": f"t{i}", "passed": i < passed} for i in range(10)]
        e.passk = passk_with_ci(e.results, [1], n_boot=200)
        e.metrics = {"metrics/merge.json": {"rows": 40 if verify == "tests" else 50,
                                            "tokens_est": 900}}
        e.evolve = {"r1": {"calls": 30, "prompt_tokens": 1000, "completion_tokens": 500}}
        if verify == "tests":
            e.evolve["r1"]["verify"] = {
                "rows_verified": 10, "kept": 7, "verified_rate": 0.7, "attempts_per_kept": 1.4,
                "eliminated_failed_tests": 2, "eliminated_no_python": 1,
                "tests_per_kept_mean": 3.2, "tests_per_kept_min": 1, "kept_with_one_test": 2,
                "sandbox_rows_per_s": 40.0}
        return e

    plain, verified = exp("rounds-1", "none", 3), exp("verified-rounds-1", "tests", 5)
    doc = Doc("t")
    verification_section(doc, [verified, plain])
    md = doc.markdown()
    assert "## Verification" in md and "self" not in md.split("## Verification")[0]
    lines = [line for line in md.splitlines() if line.startswith("| rounds-1")
             or line.startswith("| verified-rounds-1")]
    assert lines[0].startswith("| rounds-1 | 1 | no | 0.300")  # unverified first
    assert lines[1].startswith("| verified-rounds-1 | 1 | yes | 0.500")
    assert "| 40 | 900 | 30 | 1500 |" in lines[1]
    assert "| verified-rounds-1 | r1 | 10 | 7 | 0.7 | 1.4 | 2 | 1 | 3.2 (min 1, 2 with one) |" \
        in md
    assert verified_vs_unverified([plain, verified]).startswith(b"\x89PNG")
    doc = Doc("t")
    verification_section(doc, [plain])  # nothing verified: no section, no figure
    assert "Verification" not in doc.markdown() and verified_vs_unverified([plain]) is None


def test_fixture_knows_every_verdict():
    """The fixture's per-round columns follow the engine's verdict list (the plots read
    them), so a new verdict cannot leave a DVC plot without data unnoticed."""
    from wizardcoder.evolve.filters import VERDICTS

    assert re.search(r"rules = (\[[^\]]*\])", FAKE_STAGE)
    listed = re.findall(r'"(\w+)"', re.search(r"rules = (\[[^\]]*\])", FAKE_STAGE).group(1))
    assert listed == list(VERDICTS)


def test_a_score_file_with_an_entry_per_benchmark_reports_humaneval_first():
    exp = report.Experiment(name="x", rev="workspace", metrics={"metrics/score.json": {
        "mbpp": {"pass@1": 0.5, "tasks": 500}, "humaneval": {"pass@1": 0.25, "tasks": 164}}})
    assert report._primary_benchmark(exp) == "humaneval"
    assert exp.metric("score", "tasks") == 164 and exp.metric("score", "benchmark") == \
        "humaneval"
    flat = report.Experiment(name="y", rev="workspace", metrics={"metrics/score.json": {
        "benchmark": "humaneval", "pass@1": 0.25}})
    assert report._primary_benchmark(flat) == "humaneval"
