"""The LLM client's failure policy against a real scripted HTTP server on 127.0.0.1.

Nothing here mocks the client: requests go through the openai package over real sockets to
``tests/fault_server.py``, which answers with 429s, 5xx, slow and malformed bodies on demand,
so retries, pacing, caching and crash-safety are checked the way they happen in production.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fault_server import (
    LENGTH,
    MALFORMED,
    SERVER_ERROR,
    FaultServer,
    answer_text,
    delay,
    rate_limited,
    status,
)
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError, WizardcoderError
from wizardcoder.llm import (
    ChatRequest,
    LLMClient,
    LLMConfig,
    LLMRequestError,
    RequestCache,
    open_client,
    request_key,
)
from wizardcoder.llm.client import RateLimiter, parse_retry_after

REPO = Path(__file__).resolve().parents[1]
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 5.0}


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache_dir"))


def ask(prompt: str, max_tokens: int = 16, **kw) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": prompt}], max_tokens=max_tokens,
                       tag=prompt, **kw)


def make_client(server: FaultServer, cache_path: Path, **overrides) -> LLMClient:
    cfg = LLMConfig(provider="openai", base_url=server.url, model=server.model,
                    **{**FAST, **overrides})
    return LLMClient(cfg, server.url, "test-key", "fault-identity", RequestCache(cache_path))


def test_retries_then_success_counts_match(tmp_path):
    script = {"flaky": [SERVER_ERROR, rate_limited("0"), MALFORMED, delay(1.5), status(503)],
              "cut": [LENGTH]}
    with FaultServer(script) as server:
        client = make_client(server, tmp_path / "c.sqlite", timeout_s=0.5)
        flaky, cut, plain = client.chat_many([ask("flaky"), ask("cut"), ask("plain")],
                                             progress=False)
    assert flaky.text == answer_text("flaky") and flaky.attempts == 6 and not flaky.cached
    assert cut.finish_reason == "length" and cut.text == "answer to"
    assert plain.finish_reason == "stop" and plain.attempts == 1
    assert server.counts == {"flaky": 6, "cut": 1, "plain": 1}
    assert client.stats["calls"] == 8 == server.total
    assert client.stats["retries"] == 5 and client.stats["failures"] == 0
    assert client.stats["completion_tokens"] == sum(
        r.completion_tokens for r in (flaky, cut, plain))
    assert client.stats["prompt_tokens"] == 30


def test_retry_after_seconds_is_honoured(tmp_path):
    with FaultServer({"q": [rate_limited("1")]}) as server:
        client = make_client(server, tmp_path / "c.sqlite")
        start = time.monotonic()
        (result,) = client.chat_many([ask("q")], progress=False)
        elapsed = time.monotonic() - start
    assert result.attempts == 2 and server.counts["q"] == 2
    # Backoff alone would wait <= 0.01 s; only the header explains a full second.
    assert 1.0 <= elapsed < 3.0


def test_parse_retry_after_forms():
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": future}) <= 31
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_exhausted_retries_raise_naming_request(tmp_path):
    with FaultServer({"doomed": [SERVER_ERROR] * 3}) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_retries=2, max_in_flight=1)
        with pytest.raises(LLMRequestError) as info:
            client.chat_many([ask("fine"), ask("doomed")], progress=False)
        exc = info.value
        assert exc.tag == "doomed" and exc.attempts == 3
        assert "'doomed'" in str(exc) and "3 attempt" in str(exc) and "HTTP 500" in str(exc)
        assert isinstance(exc, WizardcoderError) and exc.exit_code != 0
        assert server.counts["doomed"] == 3
        assert client.stats["failures"] == 1 and client.stats["retries"] == 2
        # The answered request was kept: a rerun sends only the failed one.
        client2 = make_client(server, tmp_path / "c.sqlite")
        fine, doomed = client2.chat_many([ask("fine"), ask("doomed")], progress=False)
    assert fine.cached and not doomed.cached
    assert server.counts == {"fine": 1, "doomed": 4}


def test_non_retryable_error_fails_at_once(tmp_path):
    with FaultServer({"bad": [status(400, "max_tokens too large")]}) as server:
        client = make_client(server, tmp_path / "c.sqlite")
        with pytest.raises(LLMRequestError, match="non-retryable.*HTTP 400.*max_tokens"):
            client.chat_many([ask("bad")], progress=False)
    assert server.counts["bad"] == 1


def test_max_in_flight_is_respected(tmp_path):
    prompts = [f"p{i}" for i in range(9)]
    with FaultServer({p: [delay(0.3)] for p in prompts}) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_in_flight=3)
        results = client.chat_many([ask(p) for p in prompts], progress=False)
    assert [r.text for r in results] == [answer_text(p) for p in prompts]  # same order
    assert server.peak_in_flight == 3


def test_second_run_makes_zero_network_calls(tmp_path):
    requests = [ask(f"q{i}", temperature=0.7, seed=i) for i in range(5)]
    with FaultServer() as server:
        first = make_client(server, tmp_path / "c.sqlite").chat_many(requests, progress=False)
        sent = server.total
        client = make_client(server, tmp_path / "c.sqlite")
        assert client.estimate(requests)["uncached_calls"] == 0
        second = client.chat_many(requests, progress=False)
        assert server.total == sent == 5
    assert client.stats["calls"] == 0 and client.stats["cache_hits"] == 5
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached and r.attempts == 0 for r in second)


def test_duplicates_in_a_batch_cost_one_call_and_estimate(tmp_path):
    with FaultServer() as server:
        client = make_client(server, tmp_path / "c.sqlite")
        batch = [ask("same"), ask("same"), ask("other", max_tokens=100)]
        est = client.estimate(batch)
        assert est == {"requests": 3, "unique": 2, "cached": 0, "uncached_calls": 2,
                       "prompt_tokens_est": 2 + 2, "max_completion_tokens": 116}
        a, b, _ = client.chat_many(batch, progress=False)
    assert server.counts["same"] == 1 and a.text == b.text and b.cached


def test_cache_key_ignores_what_does_not_change_the_answer():
    msgs = [{"role": "user", "content": "x"}]
    base = request_key("m", msgs, max_tokens=8, temperature=1, top_p=1, seed=None, stop="a")
    assert base == request_key("m", msgs, max_tokens=8, temperature=1.0, top_p=1.0, seed=None,
                               stop=["a"])
    assert base != request_key("m2", msgs, max_tokens=8, temperature=1, top_p=1, seed=None,
                               stop="a")
    assert base != request_key("m", msgs, max_tokens=9, temperature=1, top_p=1, seed=None,
                               stop="a")


WRITER = textwrap.dedent("""
    import sys
    from wizardcoder.llm import RequestCache
    cache = RequestCache(sys.argv[1])
    for i in range(40):
        for key in (f"{sys.argv[2]}-{i}", f"shared-{i}"):
            cache.put(key, model_identity="m", request={}, text=key, finish_reason="stop",
                      prompt_tokens=1, completion_tokens=1, model="m")
""")


def test_cache_is_safe_with_concurrent_writer_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    RequestCache(path).close()  # create the schema once; writers race on rows, not DDL
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{n}"], cwd=REPO,
                                env=env, stderr=subprocess.PIPE, text=True) for n in range(3)]
    errors = [w.communicate(timeout=60)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0, 0], errors
    with RequestCache(path) as cache:
        assert len(cache) == 3 * 40 + 40
        assert cache.get("w2-39").text == "w2-39" and cache.get("shared-0").text == "shared-0"
        assert cache.stats()["models"]["m"]["entries"] == 160


CHILD = textwrap.dedent("""
    import sys
    from wizardcoder.llm import ChatRequest, LLMClient, LLMConfig, RequestCache
    url, cache = sys.argv[1], sys.argv[2]
    cfg = LLMConfig(provider="openai", base_url=url, model="fault-model", max_in_flight=1)
    client = LLMClient(cfg, url, "k", "fault-identity", RequestCache(cache))
    reqs = [ChatRequest([{"role": "user", "content": f"q{i}"}], max_tokens=8, tag=f"q{i}")
            for i in range(5)]
    client.chat_many(reqs, progress=False)
""")


def test_cache_survives_sigkill_mid_run(tmp_path):
    cache_path = tmp_path / "c.sqlite"
    with FaultServer({"q4": [delay(60)]}) as server:
        child = subprocess.Popen([sys.executable, "-c", CHILD, server.url, str(cache_path)],
                                 cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            deadline = time.monotonic() + 30
            while server.counts["q4"] == 0:  # q0..q3 answered, q4 hanging
                assert child.poll() is None, "child exited early"
                assert time.monotonic() < deadline, "child never reached the slow request"
                time.sleep(0.05)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        with sqlite3.connect(cache_path) as db:
            assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 4
        client = make_client(server, cache_path)
        results = client.chat_many([ask(f"q{i}", max_tokens=8) for i in range(5)],
                                   progress=False)
    assert [r.cached for r in results] == [True] * 4 + [False]
    assert server.counts == {"q0": 1, "q1": 1, "q2": 1, "q3": 1, "q4": 2}


def test_api_key_never_leaks(tmp_path, monkeypatch, caplog, capsys):
    key = "sk-test-" + "S3cr3tV4lue" * 4
    monkeypatch.setenv("WC_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    script = {"retry": [SERVER_ERROR, rate_limited("0")],
              "echo": [status(401, f"Incorrect API key provided: {key}")]}
    with FaultServer(script) as server:
        cfg = LLMConfig(provider="openai", base_url=server.url, model=server.model,
                        api_key_env="WC_TEST_KEY", **FAST)
        with open_client(cfg, cache_path=tmp_path / "c.sqlite") as client:
            client.chat_many([ask("retry"), ask("ok")])
            with pytest.raises(LLMRequestError) as info:
                client.chat_many([ask("echo")])
            texts = [str(info.value), repr(info.value), repr(client), str(client.stats)]
    assert server.auth_headers and all(h == f"Bearer {key}" for h in server.auth_headers)
    assert "HTTP 401" in str(info.value) and "[redacted]" in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
    out = capsys.readouterr()
    texts += [caplog.text, out.out, out.err, (tmp_path / "c.sqlite").read_bytes().decode(
        "utf-8", "replace")]
    assert "retrying" in caplog.text  # the logs were captured, and are still key-free
    for text in texts:
        assert key not in text and key[:16] not in text


def test_openai_cloud_needs_the_key_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("WC_MISSING_KEY", raising=False)
    cfg = LLMConfig(provider="openai", model="gpt-4o-mini", api_key_env="WC_MISSING_KEY")
    with pytest.raises(ConfigError, match="WC_MISSING_KEY is not set"):
        with open_client(cfg, cache_path=tmp_path / "c.sqlite"):
            pass


def test_config_validation_messages():
    key = "sk-proj-" + "a1B2c3" * 8
    with pytest.raises(ConfigError, match="not the key itself") as info:
        from_dict(LLMConfig, {"provider": "openai", "model": "gpt-4o",
                              "api_key_env": key}, "llm")
    assert key not in str(info.value)
    with pytest.raises(ConfigError, match="unknown key 'max_inflight'.*max_in_flight"):
        from_dict(LLMConfig, {"max_inflight": 2}, "llm")
    with pytest.raises(ConfigError, match="llm.max_in_flight"):
        from_dict(LLMConfig, {"max_in_flight": 0}, "llm")
    with pytest.raises(ConfigError, match="llm.model.*embedded"):
        from_dict(LLMConfig, {"model": "gpt-4o"}, "llm")
    with pytest.raises(ConfigError, match="llm.base_url.*user:password"):
        from_dict(LLMConfig, {"provider": "openai", "model": "m",
                              "base_url": "https://u:p@example.com/v1"}, "llm")
    with pytest.raises(ConfigError, match="llm.base_url: expected null with provider"):
        from_dict(LLMConfig, {"base_url": "http://127.0.0.1:8000/v1"}, "llm")
    with pytest.raises(ConfigError, match="llm.provider"):
        from_dict(LLMConfig, {"provider": "anthropic"}, "llm")
    cfg = from_dict(LLMConfig, {"provider": "openai", "model": "gpt-4o-mini"}, "llm")
    assert cfg.effective_base_url == "https://api.openai.com/v1" and cfg.is_openai_cloud
    with pytest.raises(ValueError, match="max_tokens"):
        ChatRequest([{"role": "user", "content": "x"}], max_tokens=0)


def test_rate_limiter_paces_requests_and_tokens():
    async def timed(limiter: RateLimiter, costs: list[int]) -> float:
        start = time.monotonic()
        for cost in costs:
            await limiter.acquire(cost)
        return time.monotonic() - start

    # 240 rpm: a 40-request burst (ten seconds' worth), then 4 per second.
    assert 0.45 <= asyncio.run(timed(RateLimiter(240, 0), [1] * 42)) < 1.5
    # 12000 tpm: a 2000-token burst, then 200 tokens per second.
    assert 0.45 <= asyncio.run(timed(RateLimiter(0, 12000), [2000, 100])) < 1.5
    assert asyncio.run(timed(RateLimiter(0, 0), [10**6] * 100)) < 0.1
