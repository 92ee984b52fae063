"""Generation: config, benchmarks, the batched HF backend on a tiny random Llama, the runner.

The tiny model (2 layers, width 64) uses the embedded GGUF's tokenizer, so nothing is
downloaded; every test here runs offline.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import urllib.error

import pytest

from tests.fake_openai import SERVER_ERROR, FaultServer, Reply
from tests.fake_openai import status as fault_status
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError, DataError, ExternalError
from wizardcoder.generate import (
    GenerateConfig,
    export_samples,
    generate_samples,
    load_benchmark,
    make_backend,
    prompt_text,
    read_samples,
)
from wizardcoder.generate.base import truncate_at_stop
from wizardcoder.prompt_template import build_prompt, humaneval_instruction

torch = pytest.importorskip("torch")

PROMPTS = [
    "def add(a, b):\n",
    "Hello",
    build_prompt(humaneval_instruction("def f(x):\n    '''Return x squared.'''\n")),
    "import os\nimport sys\n\nprint(os.getcwd())\n# now list the files",
]


@pytest.fixture(autouse=True)
def own_cache_dir(tmp_path, monkeypatch):
    """The runner keeps resumable progress in the cache dir: one per test."""
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "wc-cache"))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's matmuls gain nothing from threads; on a busy 2-core machine OpenMP
    spinning made them ~6x slower than one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model_dir(make_tiny_llama):
    """The tiny Llama with larger random weights (initializer_range 0.2: varied greedy
    output) and a tokenizer without a pad token, like StarCoder's: the backend must cope
    (pads with EOS)."""
    return make_tiny_llama(pad_token=False, initializer_range=0.2)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from wizardcoder.generate.hf import load_model

    return load_model(tiny_model_dir, "cpu", "float32")


def hf_backend(loaded, model_dir, **settings):
    from wizardcoder.generate.hf import HFBackend

    settings.setdefault("stop", [])
    model, tokenizer = loaded
    return HFBackend(GenerateConfig(**settings), model_dir, model=model, tokenizer=tokenizer)


# --- config -------------------------------------------------------------------------------

def test_config_defaults_and_validation():
    config = from_dict(GenerateConfig, {"benchmarks": ["humaneval"], "limit": 5}, "generate")
    assert config.greedy and config.n_samples == 1 and config.backend == "hf"
    with pytest.raises(ConfigError, match="n_samples.*greedy"):
        GenerateConfig(n_samples=5)
    GenerateConfig(n_samples=5, temperature=0.2)
    with pytest.raises(ConfigError, match="task_ids"):
        GenerateConfig(limit=3, task_ids=["HumanEval/0"])
    with pytest.raises(ConfigError, match="one of"):
        from_dict(GenerateConfig, {"backend": "tgi"}, "generate")
    with pytest.raises(ConfigError, match="device"):
        GenerateConfig(device="gpu")
    secret = "sk-" + "a1B2" * 10
    with pytest.raises(ConfigError) as exc:
        GenerateConfig(api_key_env=secret)
    assert secret not in str(exc.value)


def test_instruction_prompt_uses_the_training_template():
    problem = {"prompt": "def f():\n    pass\n"}
    assert prompt_text(problem, "instruction") == build_prompt(
        humaneval_instruction(problem["prompt"]))
    assert prompt_text(problem, "completion") == problem["prompt"]


# --- benchmarks ---------------------------------------------------------------------------

def test_humaneval_loads_offline_and_selects():
    problems = load_benchmark("humaneval")
    assert len(problems) == 164
    first = problems["HumanEval/0"]
    assert {"task_id", "prompt", "entry_point", "test", "canonical_solution"} <= set(first)
    assert list(load_benchmark("humaneval", limit=2)) == ["HumanEval/0", "HumanEval/1"]
    assert list(load_benchmark("humaneval", task_ids=["HumanEval/7", "HumanEval/3"])) == [
        "HumanEval/7", "HumanEval/3"]
    with pytest.raises(ConfigError, match="HumanEval/500"):
        load_benchmark("humaneval", task_ids=["HumanEval/500"])


def test_humaneval_plus_missing_override_is_an_external_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(tmp_path / "missing.jsonl"))
    with pytest.raises(ExternalError, match="HUMANEVAL_OVERRIDE_PATH"):
        load_benchmark("humaneval+")


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_humaneval_plus_without_network_is_an_external_error(monkeypatch, tmp_path):
    from evalplus.data import utils as ep_utils

    monkeypatch.delenv("HUMANEVAL_OVERRIDE_PATH", raising=False)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
                "WIZARDCODER_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ep_utils, "CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ep_utils.wget, "download", _no_network)  # never touch the network
    with pytest.raises(ExternalError, match="could not be loaded.*HUMANEVAL_OVERRIDE_PATH"):
        load_benchmark("humaneval+")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline mode: fail before any download
    monkeypatch.setattr(ep_utils.wget, "download", pytest.fail)
    with pytest.raises(ExternalError, match="not cached"):
        load_benchmark("mbpp+")


def test_humaneval_plus_from_a_local_override(monkeypatch, tmp_path):
    base = load_benchmark("humaneval", limit=2)
    path = tmp_path / "HumanEvalPlus.jsonl"
    path.write_text("".join(json.dumps({**p, "contract": "", "base_input": [], "plus_input": [],
                                        "atol": 0}) + "\n" for p in base.values()))
    monkeypatch.setenv("HUMANEVAL_OVERRIDE_PATH", str(path))
    assert list(load_benchmark("humaneval+")) == ["HumanEval/0", "HumanEval/1"]


# --- backends -----------------------------------------------------------------------------

def test_tokenizer_without_pad_token_pads_left_with_eos(loaded):
    model, tokenizer = loaded
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "left"
    assert model.generation_config.pad_token_id == tokenizer.eos_token_id


def test_batched_greedy_equals_one_at_a_time(loaded, tiny_model_dir):
    lengths = {len(loaded[1](p)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # really padded
    batched = hf_backend(loaded, tiny_model_dir, batch_size=4, max_new_tokens=12)
    together = batched.generate(PROMPTS, 1)
    assert batched.stats.calls == 1 and batched.stats.new_tokens == 4 * 12
    single = hf_backend(loaded, tiny_model_dir, batch_size=1, max_new_tokens=12)
    alone = [single.generate([p], 1)[0] for p in PROMPTS]
    assert together == alone
    assert all(len(row) == 1 and row[0] for row in together)


def test_stop_strings_end_rows_early_and_are_cut(loaded, tiny_model_dir):
    free = hf_backend(loaded, tiny_model_dir, batch_size=4, max_new_tokens=16)
    texts = [row[0] for row in free.generate(PROMPTS, 1)]
    stop = texts[0][3:6]  # appears in row 0 by construction
    stopped = hf_backend(loaded, tiny_model_dir, batch_size=4, max_new_tokens=16, stop=[stop])
    cut = [row[0] for row in stopped.generate(PROMPTS, 1)]
    assert cut == [truncate_at_stop(t, [stop]) for t in texts]
    assert stop not in cut[0]
    assert stopped.stats.new_tokens < free.stats.new_tokens  # row 0 stopped decoding


def test_sampling_returns_n_per_prompt_and_is_seeded(loaded, tiny_model_dir):
    backend = hf_backend(loaded, tiny_model_dir, batch_size=2, max_new_tokens=8,
                         temperature=1.0, top_p=0.95, n_samples=3)
    first = backend.generate(PROMPTS[:3], 3, seed=7)
    assert [len(row) for row in first] == [3, 3, 3]
    assert backend.generate(PROMPTS[:3], 3, seed=7) == first
    assert backend.generate(PROMPTS[:3], 3, seed=8) != first
    assert len(set(first[0])) > 1  # the 3 samples differ


def test_vllm_missing_is_a_clear_error():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ExternalError, match="vllm"):
        make_backend(GenerateConfig(backend="vllm"), "embedded")


ANSWER = ("Sure:\n```python\ndef f():\n    return 1\n```\nIt returns 1.\n"
          "if __name__ == '__main__':\n    f()")


def _prompt_of(body: dict) -> str:
    return body["messages"][-1]["content"]


def test_openai_backend_against_a_local_server(monkeypatch):
    """A real HTTP server on 127.0.0.1 that answers one choice whatever ``n`` asks for,
    fails once with a 500, and checks the key."""
    monkeypatch.setenv("WIZARDCODER_TEST_KEY", "local-key-123")
    with FaultServer({"def g():\n": [SERVER_ERROR], "bad": [fault_status(400, "no model")]},
                     responder=lambda body: Reply(ANSWER)) as server:
        config = GenerateConfig(backend="openai", openai_api="chat", base_url=server.url,
                                model="fault-model", temperature=0.5, n_samples=2,
                                batch_size=2, api_key_env="WIZARDCODER_TEST_KEY")
        with make_backend(config, "/models/x") as backend:
            out = backend.generate(["def f():\n", "def g():\n"], 2, seed=3)
            with pytest.raises(ExternalError, match="400.*no model"):
                backend.generate(["bad"], 1, seed=0)
        plain = dataclasses.replace(config, stop_after_code_block=False, n_samples=1,
                                    temperature=0.0)
        with make_backend(plain, "/models/x") as greedy:
            (uncut,), = greedy.generate(["def h():\n"], 1)
    block = "Sure:\n```python\ndef f():\n    return 1\n```"
    assert out == [[block, block], [block, block]]  # cut after the code block
    assert uncut == block + "\nIt returns 1."  # cut at the "\nif __name__" stop string only
    asked: dict[str, list] = {}
    for body in server.answered:
        asked.setdefault(_prompt_of(body), []).append((body["n"], body.get("seed")))
    # one choice came back per request: the missing one was asked for again, reseeded
    assert sorted(asked["def f():\n"]) == [(1, 4), (2, 3)]
    assert sorted(asked["def g():\n"]) == [(1, 5), (2, 4)]
    assert server.counts["def g():\n"] == 3  # the 500 was retried by the client
    assert set(server.auth_headers) == {"Bearer local-key-123"}
    first = server.answered[0]
    assert first["model"] == "fault-model" and first["stop"] == config.stop[:4]
    assert first["temperature"] == 0.5 and first["max_tokens"] == config.max_new_tokens
    assert backend.stats.new_tokens == 4 * len(ANSWER.split())
    assert backend.stats.prompts == 2 and backend.stats.completions == 4  # the 400 counts not


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed")
def test_openai_backend_completions_on_the_embedded_llama_cpp_server(tmp_path, monkeypatch):
    from wizardcoder.llm import EmbeddedServer, LLMConfig

    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    llm = LLMConfig(embedded_n_threads=2, embedded_n_ctx=1024)
    out = tmp_path / "samples.jsonl"
    with EmbeddedServer(llm) as server:
        config = GenerateConfig(benchmarks=["humaneval"], limit=1, prompt_format="completion",
                                backend="openai", openai_api="completions",
                                base_url=server.base_url, model=llm.model, max_new_tokens=16,
                                batch_size=2)
        summary = generate_samples(config, "embedded", out, progress=False)
        again = generate_samples(dataclasses.replace(config, limit=2), "embedded", out,
                                 progress=False)
    assert summary["generated"] == 1 and again["reused"] == 1 and again["generated"] == 1
    assert 0 < summary["backend"]["new_tokens"] <= 16
    header, rows = read_samples(out)
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert all(r["raw"][0].strip() and r["solution"][0] for r in rows)


# --- runner -------------------------------------------------------------------------------

def code_reply(body: dict) -> Reply:
    """A model that answers every prompt with a code block naming the request's seed."""
    return Reply(f"```python\ndef x():\n    return {body.get('seed')}\n```\nExplanation.")


def _config(**settings):
    base = dict(benchmarks=["humaneval"], limit=3, batch_size=2, prompt_format="completion",
                max_new_tokens=8)
    return GenerateConfig(**{**base, **settings})


def _openai_config(server, **settings):
    return _config(backend="openai", openai_api="chat", base_url=server.url,
                   model="fault-model", **settings)


def test_runner_writes_header_and_rows_with_the_hf_backend(loaded, tiny_model_dir, tmp_path):
    out = tmp_path / "samples.jsonl"
    config = _config(stop=["\n\n"])
    backend = hf_backend(loaded, tiny_model_dir, **dataclasses.asdict(config))
    summary = generate_samples(config, tiny_model_dir, out, progress=False, backend=backend)
    assert summary["generated"] == 3 and backend.stats.calls == 2  # batches of 2 + 1
    header, rows = read_samples(out)
    assert header["type"] == "header" and header["settings"]["limit"] == 3
    assert header["model_dir"] == str(tiny_model_dir) and header["benchmark"] == "humaneval"
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for row in rows:
        assert row["type"] == "sample" and len(row["raw"]) == len(row["solution"]) == 1
        assert row["prompt_text"].startswith(("from typing", "\n\ndef", "def"))
    assert len(export_samples(out)) == 3


def test_runner_resumes_restarts_and_survives_a_cut_line(tmp_path):
    out = tmp_path / "samples.jsonl"
    with FaultServer(responder=code_reply) as server:
        config = _openai_config(server)
        summary = generate_samples(config, "m", out, progress=False)
        assert summary["generated"] == 3 and server.total == 3
        summary = generate_samples(config, "m", out, progress=False)
        assert summary["reused"] == 3 and summary["generated"] == 0 and server.total == 3

        with open(out, "a") as handle:  # a killed writer left half a line
            handle.write('{"type": "sample", "task_id": "HumanEval/3", "raw": ["x')
        bigger = _openai_config(server, limit=4)  # a larger selection keeps what exists
        summary = generate_samples(bigger, "m", out, progress=False)
        assert summary["generated"] == 1 and server.total == 4
        header, rows = read_samples(out)
        assert header["settings"]["limit"] == 4 and len(rows) == 4

        changed = _openai_config(server, limit=4, max_new_tokens=9)
        summary = generate_samples(changed, "m", out, progress=False)
        assert summary["reused"] == 0 and server.total == 8
        generate_samples(changed, "other", out, progress=False)  # another model: start over
        assert server.total == 12


def test_killed_run_resumes_from_the_last_whole_batch(tmp_path):
    out = tmp_path / "samples.jsonl"
    third = load_benchmark("humaneval", limit=3)["HumanEval/2"]["prompt"]
    with FaultServer({third: [fault_status(400, "scripted failure")]},
                     responder=code_reply) as server:
        config = _openai_config(server, limit=5)
        with pytest.raises(ExternalError, match="scripted failure"):
            generate_samples(config, "m", out, progress=False)
        assert not out.exists()  # the output is written whole, at the end
        progress = sorted((tmp_path / "wc-cache" / "generate").glob("*.jsonl"))
        assert len(progress) == 1  # the batch with the failure was not written
        assert len(read_samples(progress[0])[1]) == 2
        with pytest.raises(DataError, match="incomplete"):
            export_samples(progress[0])
        out.unlink(missing_ok=True)  # as DVC does before a rerun: progress is in the cache
        before = server.total
        generate_samples(config, "m", out, progress=False)
        assert server.total - before == 3
    rows = export_samples(out)
    assert [r["task_id"] for r in rows] == [f"HumanEval/{i}" for i in range(5)]
    # Seeds follow task positions, so a resumed batch is seeded as in an unbroken run.
    assert "return 2" in rows[2]["solution"] and "return 4" in rows[4]["solution"]
    assert "Explanation" not in rows[0]["solution"]


def test_output_depends_only_on_inputs(tmp_path):
    """No run time or date in the file: the same inputs give the same bytes, wherever and
    whenever they are generated (a resumed run included)."""
    with FaultServer(responder=code_reply) as server:
        config = _openai_config(server)
        generate_samples(config, "m", tmp_path / "a.jsonl", progress=False)
        generate_samples(config, "m", tmp_path / "b.jsonl", progress=False)  # from the cache
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    header, _ = read_samples(tmp_path / "a.jsonl")
    assert "created" not in header and len(header["model_sha256"]) == 64


def test_cut_after_code_block():
    from wizardcoder.generate.base import cut_after_code_block

    text = "Here:\n```python\ndef f():\n    return 1\n```\nThis function returns 1."
    assert cut_after_code_block(text) == "Here:\n```python\ndef f():\n    return 1\n```"
    assert cut_after_code_block("```python\ndef f(): pass") == "```python\ndef f(): pass"
    assert cut_after_code_block("def f(): pass\n") == "def f(): pass\n"


def test_stop_after_code_block_criterion(loaded):
    from wizardcoder.generate.hf import StopAfterCodeBlock

    _, tokenizer = loaded
    prompt = tokenizer.encode("### Response:")
    closed = tokenizer.encode("\n```python\nx = 1\n```\nmore")
    still_open = tokenizer.encode("\n```python\nx = 1\nmore text")
    width = max(len(closed), len(still_open))
    pad = tokenizer.pad_token_id
    rows = [prompt + closed + [pad] * (width - len(closed)),
            prompt + still_open + [pad] * (width - len(still_open))]
    done = StopAfterCodeBlock(tokenizer, len(prompt))(torch.tensor(rows), None)
    assert done.tolist() == [True, False]
