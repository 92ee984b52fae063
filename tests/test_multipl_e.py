"""MultiPL-E (issue 19): the bundled tasks and their loaders, each language's programs run in the
sandbox with MultiPL-E's verdicts (a passing, a failing, a compile-error and a timeout
completion of HumanEval_53_add per language), hostile programs, a missing toolchain refused,
and `wizardcoder score --benchmark multipl-e-<lang>` end to end."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wizardcoder.benchmarks import multipl_e
from wizardcoder.benchmarks.problems import load_benchmark
from wizardcoder.errors import DataError, ExternalError
from wizardcoder.sandbox import toolchains
from wizardcoder.sandbox.toolchain_run import ToolchainLimits, run_program
from wizardcoder.score.config import ScoreConfig
from wizardcoder.score.multipl_e import score_multipl_e

ROOT = Path(__file__).resolve().parents[1]
TASK = "HumanEval_53_add"
COUNTS = {"cpp": 161, "java": 158, "js": 161, "ts": 159, "php": 161, "rs": 156, "go": 154,
          "sh": 158, "lua": 161, "rb": 161}
# (passing, failing, compile error, endless) completions of HumanEval_53_add, and the status
# MultiPL-E's evaluator gives the third: PHP's parse errors go to stderr with Debian's php.ini,
# which MultiPL-E's rule (\"PHP Parse error\" on stdout) calls an Exception; Ruby's rule calls
# any run that writes to stderr a SyntaxError.
ADD = {
    "cpp": ("    return x + y;\n", "    return x - y;\n", "    return x + y\n",
            "    for (;;) { x++; }\n", "SyntaxError"),
    "java": ("        return x + y;\n", "        return x - y;\n", "        return x + y\n",
             "        while (true) { x++; }\n", "SyntaxError"),
    "js": ("  return x + y;\n}\n", "  return x - y;\n}\n", "  return x + ;\n}\n",
           "  while (true) {}\n}\n", "SyntaxError"),
    "ts": ("  return x + y;\n}\n", "  return x - y;\n}\n", "  return x + ;\n}\n",
           "  while (true) {}\n}\n", "SyntaxError"),
    "php": ("    return $x + $y;\n}\n", "    return $x - $y;\n}\n", "    return $x + ;\n}\n",
            "    while (true) {}\n}\n", "Exception"),
    "rs": ("    x + y\n", "    x - y\n", "    x +\n", "    loop {}\n", "SyntaxError"),
    "go": ("    return x + y\n}\n", "    return x - y\n}\n", "    return x +\n}\n",
           "    for {}\n}\n", "SyntaxError"),
    "sh": ("    echo $(( $1 + $2 ))\n", "    echo $(( $1 - $2 ))\n", "    if then\n",
           "    while true; do :; done\n", "SyntaxError"),
    "lua": ("    return x + y\nend\n", "    return x - y\nend\n", "    return x +\nend\n",
            "    while true do end\nend\n", "Exception"),
    "rb": ("  x + y\nend\n", "  x - y\nend\n", "  x +\nend\n", "  loop { }\nend\n",
           "SyntaxError"),
}
FAST = ToolchainLimits(run_timeout_s=3.0, compile_timeout_s=60.0)


def installed(language: str) -> bool:
    return not toolchains.missing_packages(language)


def test_bundled_tasks_in_multipl_e_format():
    for language, count in COUNTS.items():
        problems = load_benchmark(f"multipl-e-{language}")
        assert len(problems) == count, language
        first = next(iter(problems.values()))
        assert first["task_id"].startswith("HumanEval_0_") and first["language"] == language
        assert first["stop"] and all(isinstance(s, str) for s in first["stop"])
        assert first["instruction"].startswith(
            f"Create a {multipl_e.LANGUAGES[language]} script for this problem:\n")
        assert problems[TASK]["entry_point"] == "add"


def test_local_file_and_its_errors(tmp_path, monkeypatch):
    rows = [json.loads(line) for line in gzip.open(
        multipl_e.RESOURCES / "humaneval-lua.jsonl.gz", "rt")][:3]
    path = tmp_path / "lua.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("MULTIPL_E_PATH_LUA", str(path))
    assert list(load_benchmark("multipl-e-lua")) == [r["name"] for r in rows]
    rows[1]["stop_tokens"] = "\n"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_benchmark("multipl-e-lua")
    assert f"{path}:2" in str(err.value) and "stop_tokens" in str(err.value)


def test_hub_source_goes_through_datasets_and_fails_clearly_offline(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("MULTIPL_E_SOURCE", "hub")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-wizardcoder-test")
    with pytest.raises(ExternalError, match="nuprl/MultiPL-E config humaneval-cpp"):
        load_benchmark("multipl-e-cpp")


def test_instruction_answer_becomes_a_continuation():
    problem = load_benchmark("multipl-e-cpp")[TASK]
    answer = ("Here is the code:\n```cpp\nlong add(long x, long y) {\n    return x + y;\n}\n"
              "int main() {}\n```\nDone.")
    assert multipl_e.completion_from_response(problem, answer) == "    return x + y;"


def test_generation_prompts_stop_tokens_and_the_scored_program():
    from wizardcoder.generate.runner import prompt_text, solution_of
    from wizardcoder.score.multipl_e import row_program

    problem = load_benchmark("multipl-e-cpp")[TASK]
    assert prompt_text(problem, "completion") == problem["prompt"]
    instruction = prompt_text(problem, "instruction")
    assert "Create a C++ script for this problem:\n#include" in instruction
    assert "Python" not in instruction and instruction.endswith("### Response:")
    raw = "    return x + y;\n}\nint main() { return 1; }\n"  # cut at the stop token "\n}"
    solution = solution_of(problem, raw, "completion")
    assert solution == problem["prompt"] + "    return x + y;"
    assert row_program(problem, {"solution": solution}) == \
        multipl_e.program(problem, "    return x + y;")
    answer = "```cpp\nlong add(long x, long y) {\n    return x + y;\n}\n```"
    assert solution_of(problem, answer, "instruction") == solution
    if installed("cpp"):
        assert run_program("cpp", row_program(problem, {"solution": solution}),
                           FAST).status == "OK"


@pytest.mark.slow
@pytest.mark.parametrize("language", list(ADD))
def test_verdicts_per_language(language):
    if not installed(language):
        pytest.skip(f"{language} toolchain not installed: bash scripts/install.sh "
                    f"--languages {language}")
    problem = load_benchmark(f"multipl-e-{language}")[TASK]
    passing, failing, broken, endless, broken_status = ADD[language]
    limits = FAST if language != "go" else dataclasses.replace(FAST, compile_timeout_s=20.0)
    got = [run_program(language, multipl_e.program(problem, c), limits)
           for c in (passing, failing, broken, endless)]
    statuses = [r.status for r in got]
    # MultiPL-E's PHP evaluator knows no Timeout: a killed program is an Exception.
    endless_status = "Exception" if language == "php" else "Timeout"
    assert statuses == ["OK", "Exception", broken_status, endless_status], \
        [(r.status, r.detail[-300:]) for r in got]


HOSTILE = {
    "network": ("sh", "exec 3<>/dev/tcp/1.1.1.1/80 && echo connected\n"),
    "loopback": ("sh", "exec 3<>/dev/tcp/127.0.0.1/22 && echo connected\n"),
    "write_outside": ("sh", "echo x > /etc/owned && echo wrote; echo x > /usr/owned && "
                            "echo wrote\n"),
    "host_files": ("sh", "cat /etc/passwd /etc/shadow; ls /root /home /work " +
                   str(ROOT) + " && echo visible\n"),
    "fork_bomb": ("cpp", "#include <unistd.h>\nint main(){ while (1) fork(); }\n"),
    "daemon": ("sh", "(sleep 1000 &) ; echo started\nexit 1\n"),
}


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_hostile_programs_fail_and_touch_nothing(attack, tmp_path):
    language, source = HOSTILE[attack]
    if not installed(language):
        pytest.skip(f"{language} toolchain not installed")
    result = run_program(language, source, FAST)
    assert result.status in ("Exception", "Timeout"), (result.status, result.detail)
    assert "connected" not in result.detail and "wrote" not in result.detail
    assert "visible" not in result.detail and "root:" not in result.detail
    assert not os.path.exists("/etc/owned") and not os.path.exists("/usr/owned")


MEMORY_HOG = r"""#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main() {
    for (int i = 0; i < 12; i++)
        if (fork() == 0) { char *p = (char *)malloc(200 << 20); memset(p, 1, 200 << 20);
                           sleep(3); return 0; }
    int status, killed = 0;
    while (wait(&status) > 0) killed |= WIFSIGNALED(status);
    return killed;
}
"""


def test_processes_together_are_bounded_by_the_programs_cgroup():
    """12 processes of 200 MB each: every one under the per-process limit, 2.4 GB together."""
    from wizardcoder.sandbox import cgroup

    if cgroup.support().version is None or not installed("cpp"):
        pytest.skip("no cgroup here (strict isolation refuses MultiPL-E) or no g++")
    limits = dataclasses.replace(FAST, run_timeout_s=20.0, run_memory_mb=512,
                                 compile_memory_mb=512)
    result = run_program("cpp", MEMORY_HOG, limits)
    assert result.status == "Exception" and "out of memory" in result.detail, result


def test_missing_toolchain_is_refused_naming_the_package(monkeypatch):
    lua = toolchains.TOOLCHAINS["lua"]
    monkeypatch.setitem(toolchains.TOOLCHAINS, "lua", dataclasses.replace(
        lua, packages=("lua5.4", "lua-unit-not-installed")))
    problems = load_benchmark("multipl-e-lua", task_ids=[TASK])
    rows = [{"task_id": TASK, "completion": ADD["lua"][0]}]
    with pytest.raises(toolchains.ToolchainMissing) as err:
        score_multipl_e(None, problems, rows, None, ScoreConfig(), 1)
    assert "lua-unit-not-installed" in str(err.value) and "--languages lua" in str(err.value)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WIZARDCODER_MLFLOW": "0",
           "WIZARDCODER_CACHE_DIR": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "wizardcoder", "score", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_score_cli_takes_external_samples(tmp_path):
    if not installed("cpp"):
        pytest.skip("cpp toolchain not installed")
    tasks = ["HumanEval_53_add", "HumanEval_23_strlen"]
    rows = [{"task_id": TASK, "completion": ADD["cpp"][0]},
            {"task_id": TASK, "completion": ADD["cpp"][2]},
            {"task_id": "HumanEval_23_strlen", "completion": "    return string.size();\n"}]
    samples = tmp_path / "theirs.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = cli("--samples", str(samples), "--benchmark", "multipl-e-cpp", "--tasks",
               ",".join(tasks), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "theirs.score.json").read_text())
    assert metrics["benchmark"] == "multipl-e-cpp"
    assert metrics["pass@1"] == pytest.approx(0.75)  # add: 1 of 2, strlen: 1 of 1
    results = [json.loads(line) for line in (tmp_path / "theirs.results.jsonl").open()]
    assert sorted(r["kind"] for r in results) == ["error", "passed", "passed"]
    assert any(r["detail"].startswith("SyntaxError") for r in results)
