"""The `wizardcoder` command as a user meets it, run as a real process: `params` shows the
effective values of params.yaml, an unknown section is exit 2, `--version`, a closed pipe
ends quietly, and a dead LLM server fails at once naming its URL and how to start it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from wizardcoder import __version__
from wizardcoder.config import from_dict
from wizardcoder.llm.server import free_port
from wizardcoder.params import SECTIONS, section_class

REPO = Path(__file__).resolve().parents[1]
PARAMS = {
    "seed": {"limit": 8, "shuffle_seed": None},
    "rounds": {"r1": "data/seed.jsonl", "r2": "data/evolved/r1.jsonl"},
    "llm": {"max_in_flight": 2},
    "train": {"learning_rate": 2.0e-5, "lora_target_modules": ["q_proj", "v_proj"]},
}


def wizardcoder(*args: str, cwd: Path, stdout=subprocess.PIPE, timeout: float = 120,
                entry: tuple[str, ...] = ("-m", "wizardcoder"), env: dict | None = None
                ) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WIZARDCODER_ROOT": str(cwd),
           "WIZARDCODER_CACHE_DIR": str(cwd / "cache"), **(env or {})}
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(key, None)
    return subprocess.run([sys.executable, *entry, *args], cwd=cwd, env=env, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    return tmp_path


def test_params_prints_the_files_values_with_the_defaults_they_change(project):
    out = wizardcoder("params", cwd=project)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "  limit: 8    # int; default: 0\n" in text  # the file's value, not the class's
    assert "  max_in_flight: 2    # int; default: 4\n" in text
    assert "  shuffle_seed: null    # int | null; default: 0\n" in text
    assert "  lora_target_modules: [q_proj, v_proj]    # list[str]; default: [all-linear]" \
        in text
    assert "  source: bundled    # str\n" in text  # unchanged: no default beside it
    # Each key's help text is a comment above it; section headers say what the section is.
    assert "  # Keep at most this many rows after shuffling (0 = all).\n  limit: 8" in text
    assert "\nseed:    # load and validate seed instructions\n" in text
    assert "\nllm:    # the model evolution talks to (embedded or OpenAI-compatible)\n" in text
    assert "Config(" not in text and "NoneType" not in text
    # The output is YAML holding exactly the values every stage reads.
    shown = yaml.safe_load(text)
    assert list(shown) == [*SECTIONS, "rounds"]
    for section in SECTIONS:
        config = from_dict(section_class(section), PARAMS.get(section), section)
        assert shown[section] == dataclasses.asdict(config), section
    assert shown["rounds"] == PARAMS["rounds"]


def test_params_changed_and_one_section(project):
    out = wizardcoder("params", "--changed", "--no-help", cwd=project)
    assert out.returncode == 0, out.stderr
    shown = yaml.safe_load(out.stdout)
    assert shown["seed"] == {"limit": 8, "shuffle_seed": None}
    assert shown["llm"] == {"max_in_flight": 2} and "merge" not in shown
    out = wizardcoder("params", "train", cwd=project)
    assert out.returncode == 0, out.stderr
    assert list(yaml.safe_load(out.stdout)) == ["train"]


def test_params_outside_a_checkout_shows_the_defaults_and_says_so(tmp_path):
    out = wizardcoder("params", "seed", "--no-help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "params.yaml (not found: the defaults)" in out.stdout.splitlines()[0]
    assert yaml.safe_load(out.stdout)["seed"]["limit"] == 0


def test_unknown_sections_exit_2_naming_the_valid_ones(project):
    out = wizardcoder("params", "bogus", cwd=project)
    assert out.returncode == 2 and out.stdout == ""
    assert "invalid choice: 'bogus'" in out.stderr
    assert all(f"'{name}'" in out.stderr for name in (*SECTIONS, "rounds"))
    (project / "typo.yaml").write_text("trian:\n  max_steps: 2\n")
    out = wizardcoder("params", "--params", "typo.yaml", cwd=project)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown section 'trian'" in out.stderr and "train" in out.stderr


def test_version(project):
    out = wizardcoder("--version", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wizardcoder {__version__} (python ")
    assert "dvc " in out.stdout and "mlflow " in out.stdout and len(out.stdout.splitlines()) == 1


@pytest.mark.parametrize("args", [("params",), ("--help",), ("--version",), ("params", "--help"),
                                  ("exp", "--help"), ("evolve", "--help")])
def test_a_closed_pipe_ends_quietly(project, args):
    """`wizardcoder ... | head`: the reader is gone before we write; no traceback."""
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE, deterministically
    try:
        out = wizardcoder(*args, cwd=project, stdout=write)
    finally:
        os.close(write)
    # 141: as a shell reports a writer stopped by SIGPIPE; argparse's help and usage
    # printer drops the write error itself (exit 0)
    assert out.returncode == (0 if "--help" in args else 141), out.stderr
    assert out.stderr == ""


def test_head_of_params_in_a_shell_pipe(project):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(f"set -o pipefail; {sys.executable} -m wizardcoder params | head -n 2",
                         shell=True, cwd=project, env=env, capture_output=True, text=True,
                         timeout=120, executable="/bin/bash")
    assert out.stdout.startswith("# wizardcoder params: effective values of params.yaml")
    assert out.stderr == "" and out.returncode in (0, 141)


@pytest.mark.parametrize("entry", [("-m", "wizardcoder", "evolve"), ("-m", "stages.evolve")],
                         ids=["wizardcoder-evolve", "stages.evolve"])
def test_a_dead_local_llm_server_fails_at_once_naming_it(tmp_path, entry):
    """llm.base_url on a closed local port: the round stops within 5 s (it used to retry for
    46 s), exit 2, naming the URL and the command that starts a server there; nothing is
    written and no MLflow run is opened for it."""
    port = free_port()  # bound, then closed: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "seed": {"limit": 2}, "rounds": {"r1": "data/seed.jsonl"},
        "llm": {"provider": "openai", "base_url": url, "model": "local-model"}}))
    seed = tmp_path / "data/seed.jsonl"
    made = wizardcoder("seed", "--out", str(seed), cwd=tmp_path, env={"WIZARDCODER_MLFLOW": "0"})
    assert made.returncode == 0, made.stderr[-3000:]
    args = ["--round", "r1", "--input", str(seed), "--out", str(tmp_path / "r1.jsonl"),
            "--rejected", str(tmp_path / "rej.jsonl"), "--metrics", str(tmp_path / "m.json")]
    start = time.monotonic()
    out = wizardcoder(*args, cwd=tmp_path, entry=entry)
    elapsed = time.monotonic() - start
    assert out.returncode == 2, out.stderr[-3000:]
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: nothing answers at {url} (llm.base_url: connection "
                            "refused)"), error
    assert (f"`python -m llama_cpp.server --model MODEL.gguf --model_alias local-model "
            f"--host 127.0.0.1 --port {port}`") in error
    assert f"`vllm serve local-model --host 127.0.0.1 --port {port}`" in error
    assert "retrying" not in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r1.jsonl").exists() and not (tmp_path / "mlflow.db").exists()
    assert elapsed < 5.0, f"took {elapsed:.1f} s"  # the spec (issue 18); measured ~0.7 s


def test_a_dead_generation_server_fails_before_the_first_request(tmp_path):
    """generate.backend openai on a closed local port: exit 2 naming generate.base_url and
    how to start a server there, instead of the SDK's retries per prompt."""
    url = f"http://127.0.0.1:{free_port()}/v1"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"generate": {
        "backend": "openai", "base_url": url, "model": "my-model", "limit": 1}}))
    out = wizardcoder("generate", "--model", str(tmp_path / "no-model"), "--out",
                      str(tmp_path / "samples.jsonl"), cwd=tmp_path,
                      env={"WIZARDCODER_MLFLOW": "0"}, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: nothing answers at {url} (generate.base_url: connection "
                            "refused)"), error
    assert "`vllm serve my-model --host 127.0.0.1 --port" in error
    assert not list(tmp_path.glob("samples*"))
