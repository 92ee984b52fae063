"""Fixtures shared by the whole suite.

* ``embedded_tokenizer`` -- the embedded model's tokenizer, read once from its GGUF (parsing
  the GGUF vocabulary costs seconds; every test that needs it gets the same object, so only
  read it: :func:`make_tiny_llama` deep-copies it before changing anything).
* ``make_tiny_llama`` / ``tiny_model_dir`` -- THE tiny model: a random-init 2-layer Llama
  (hidden 64) saved with the embedded tokenizer, built once per session per variant. Tests
  load it; none writes into it.
* ``train_jsonl`` -- 12 small instruction rows for the tiny training runs.
* The fake OpenAI-compatible server is :mod:`tests.fake_openai`, the kill-and-resume helper
  :mod:`tests.kill_resume`.
* ``pipeline`` -- the reproduced DVC workspace of the slow tests (:mod:`tests.workspace`),
  built once per session and only read; ``workspace`` -- a private copy of it for a test that
  changes a workspace (reruns stages, queues experiments, commits, adds a remote).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

from tests.workspace import can_isolate_network, copy_workspace, make_repo, run

TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=1024, tie_word_embeddings=True)


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded model's tokenizer (read from its GGUF: no network needed). Shared: do not
    modify it."""
    pytest.importorskip("gguf")
    from transformers import AutoTokenizer

    from wizardcoder.embedded import embedded_gguf_path

    path = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.fixture(scope="session")
def make_tiny_llama(tmp_path_factory, embedded_tokenizer):
    """``make_tiny_llama(pad_token=True, **config)`` -> the directory of a random-init tiny
    Llama (seed 0) with the embedded tokenizer; ``pad_token=False`` saves the tokenizer without
    one (like StarCoder's); ``config`` overrides :data:`TINY_LLAMA`. Each variant is built
    once per session."""
    built: dict[tuple, Path] = {}

    def make(pad_token: bool = True, **config) -> Path:
        key = (pad_token, *sorted(config.items()))
        if key not in built:
            import torch
            from transformers import LlamaConfig, LlamaForCausalLM

            tokenizer = copy.deepcopy(embedded_tokenizer)
            settings = {**TINY_LLAMA, **config}
            model_config = LlamaConfig(
                vocab_size=len(tokenizer), **settings,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
            with torch.random.fork_rng():
                torch.manual_seed(0)
                model = LlamaForCausalLM(model_config)
            if not pad_token:
                tokenizer.pad_token = None
            path = tmp_path_factory.mktemp("tiny-llama")
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            built[key] = path
        return built[key]

    return make


@pytest.fixture(scope="session")
def tiny_model_dir(make_tiny_llama) -> Path:
    """The default tiny Llama (with a pad token)."""
    return make_tiny_llama()


@pytest.fixture()
def train_jsonl(tmp_path) -> Path:
    """12 instruction rows (every third with an input) for the tiny training runs."""
    rows = [{"instruction": f"Write a function that adds {i} to x.",
             "input": "x is an int" if i % 3 == 0 else "",
             "output": f"def add_{i}(x):\n    return x + {i}"} for i in range(12)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    """The cold `dvc repro` of the whole graph on TINY settings, once per session: (repo, env,
    dvc command, log). Read only. It runs inside a network namespace with only loopback up
    when this machine allows it (root), which proves the default path opens no outside
    connection."""
    repo, env = make_repo(tmp_path_factory.mktemp("e2e"))
    dvc = f"{sys.executable} -m dvc"
    cmd = f"{dvc} repro"
    if can_isolate_network():
        cmd = f"unshare -n sh -c 'ip link set lo up && {cmd}'"
    log = run(cmd, repo, env)
    return repo, env, dvc, log


@pytest.fixture()
def workspace(pipeline, tmp_path):
    """A copy of the reproduced workspace that the test may change: (repo, env, dvc)."""
    repo, env, dvc, _ = pipeline
    copy, copy_env = copy_workspace(repo, env, tmp_path / "repo")
    return copy, copy_env, dvc


# The longest files first: under `-n 2 --dist loadfile` (pyproject addopts) one worker starts
# on the end-to-end file while the other works through the rest, which sets the wall time.
LONGEST_FIRST = ("test_pipeline_e2e.py", "test_training_resume.py", "test_training.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
