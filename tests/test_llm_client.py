"""The LLM client's failure policy against a real scripted HTTP server on 127.0.0.1.

Nothing here mocks the client: requests go through the openai package over real sockets to
``tests/fake_openai.py``, which answers with 429s, 5xx, slow and malformed bodies on demand,
so retries, pacing, caching and crash-safety are checked the way they happen in production.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.fake_openai import (
    CONTENT_FILTER,
    CONTEXT_LENGTH,
    LENGTH,
    MALFORMED,
    NULL_CONTENT,
    SERVER_ERROR,
    FaultServer,
    Reply,
    answer_text,
    completion,
    delay,
    rate_limited,
    status,
)
from tests.kill_resume import kill_when
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError, ExternalError
from wizardcoder.llm import (
    ChatRequest,
    LLMClient,
    LLMConfig,
    LLMRequestError,
    RequestCache,
    TooManyRequestErrors,
    open_client,
    request_key,
)
from wizardcoder.llm.client import LLMServerUnreachable, RateLimiter, parse_retry_after
from wizardcoder.llm.wire import Wire

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


def test_exhausted_retries_fail_that_request_only_and_are_retried_by_a_rerun(tmp_path):
    with FaultServer({"doomed": [SERVER_ERROR] * 3}) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_retries=2, max_in_flight=1)
        fine, doomed = client.chat_many([ask("fine"), ask("doomed")], progress=False)
        assert fine.ok and fine.text == answer_text("fine")
        assert doomed.error == "retries_exhausted" and not doomed.ok and doomed.text == ""
        assert doomed.attempts == 3 and "3 attempt" in doomed.error_message
        assert "HTTP 500" in doomed.error_message
        assert server.counts["doomed"] == 3
        assert client.stats["request_errors"] == 1 and client.stats["retries"] == 2
        # Transient: not cached, so a rerun sends it again (and only it).
        client2 = make_client(server, tmp_path / "c.sqlite")
        fine, doomed = client2.chat_many([ask("fine"), ask("doomed")], progress=False)
    assert fine.cached and not doomed.cached and doomed.ok
    assert server.counts == {"fine": 1, "doomed": 4}


def test_per_request_failures_are_classified_cached_and_not_resent(tmp_path):
    script = {"long": [CONTEXT_LENGTH], "nasty": [CONTENT_FILTER],
              "odd": [status(400, "Invalid 'messages[0].name': string too long")],
              "null": [NULL_CONTENT], "huge": [status(413, "Request Entity Too Large")],
              "filtered": [Reply("", "content_filter")]}
    prompts = [*script, "fine"]
    with FaultServer(script) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_in_flight=2)
        results = dict(zip(prompts, client.chat_many([ask(p) for p in prompts],
                                                      progress=False), strict=True))
        sent = server.total
        again = make_client(server, tmp_path / "c.sqlite").chat_many(
            [ask(p) for p in prompts], progress=False)
        assert server.total == sent == len(prompts)  # permanent failures are not paid twice
        resend = make_client(server, tmp_path / "c.sqlite", resend_cached_errors=True)
        retried = resend.chat_many([ask(p) for p in prompts], progress=False)
        assert server.total == sent + 6  # the six failures, sent again; "fine" cached
    assert {p: r.error for p, r in results.items()} == {
        "long": "context_length", "nasty": "content_filter", "odd": "bad_request",
        "null": "empty_content", "huge": "context_length", "filtered": "content_filter",
        "fine": None}
    assert "maximum context length" in results["long"].error_message
    assert results["null"].prompt_tokens == 10  # a 200 without content still used tokens
    assert [r.error for r in again] == [r.error for r in results.values()]
    assert [r.error_message for r in again] == [r.error_message for r in results.values()]
    assert all(r.cached for r in again)
    assert all(r.ok for r in retried)  # the scripts are used up: now they answer
    assert client.stats["request_errors"] == 6 and client.stats["failures"] == 0


def test_a_failure_every_request_shares_stops_the_batch(tmp_path):
    prompts = [f"p{i}" for i in range(12)]
    script = {"p0": [status(404, "The model `nope` does not exist")]}
    with FaultServer(script) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_in_flight=1)
        with pytest.raises(LLMRequestError, match="not the request's own.*HTTP 404.*nope") \
                as info:
            client.chat_many([ask(p) for p in prompts], progress=False)
    assert "11 other request(s) not sent" in str(info.value)
    assert server.total == 1


def test_too_many_failed_requests_stop_sending(tmp_path):
    prompts = [f"p{i}" for i in range(40)]
    with FaultServer(responder=lambda body: CONTEXT_LENGTH) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_in_flight=2)
        with pytest.raises(TooManyRequestErrors) as info:
            client.chat_many([ask(p) for p in prompts], progress=False, max_errors=3)
        exc = info.value
        assert exc.counts == {"context_length": server.total} and exc.max_errors == 3
        assert 4 <= server.total <= 4 + 2  # the 4th failure stops it; 2 were in flight
        assert exc.not_sent == 40 - server.total and exc.exit_code == 2
        assert "more than the 3 allowed" in str(exc) and "maximum context" in str(exc)
        # The failures are cached: a rerun replays them and refuses before sending anything.
        sent = server.total
        with pytest.raises(TooManyRequestErrors):
            make_client(server, tmp_path / "c.sqlite").chat_many(
                [ask(p) for p in prompts], progress=False, max_errors=3)
        assert server.total == sent


def test_exhausted_retries_do_not_count_against_max_errors(tmp_path):
    """A transient failure is no reason to stop the others (a rerun retries it); only
    permanent ones count against ``max_errors``."""
    prompts = [f"t{i}" for i in range(6)]
    script = {p: [SERVER_ERROR] * 2 for p in prompts[:4]} | {"t5": [CONTEXT_LENGTH]}
    with FaultServer(script) as server:
        client = make_client(server, tmp_path / "c.sqlite", max_retries=1, max_in_flight=2)
        results = client.chat_many([ask(p) for p in prompts], progress=False, max_errors=1)
        assert server.total == 4 * 2 + 2  # every request sent: nothing stopped
    assert [r.error for r in results] == ["retries_exhausted"] * 4 + [None, "context_length"]
    assert client.stats["request_errors"] == 5


def test_reasoning_models_get_max_completion_tokens_and_no_temperature(tmp_path):
    req = ask("q", temperature=0.7, top_p=0.9, seed=3)
    with FaultServer(model="o-model", reasoning_models=("o-model",)) as server:
        (refused,) = make_client(server, tmp_path / "a.sqlite").chat_many([req],
                                                                         progress=False)
        assert refused.error == "bad_request" and "max_completion_tokens" in \
            refused.error_message
        client = make_client(server, tmp_path / "a.sqlite",
                             token_limit_param="max_completion_tokens", fixed_temperature=True)
        (answer,) = client.chat_many([req], progress=False)
        body = server.bodies[-1]
    assert answer.ok and answer.text == answer_text("q")
    assert body["max_completion_tokens"] == 16 and "max_tokens" not in body
    assert "temperature" not in body and "top_p" not in body and body["seed"] == 3
    # Different wire settings, different keys: the cached 400 was not replayed.
    plain = LLMConfig(provider="openai", base_url="http://127.0.0.1:1/v1", model="o-model")
    assert Wire(plain, "x").key(req) != Wire(client.config, "x").key(req)
    # A model that takes max_tokens keeps the keys it always had.
    assert Wire(plain, "x").key(req) == request_key(
        "x", req.messages, max_tokens=16, temperature=0.7, top_p=0.9, seed=3, stop=None)


def test_azure_api_version_query_and_api_key_header(tmp_path, monkeypatch):
    key = "azure-" + "0123456789abcdef" * 2
    monkeypatch.setenv("WC_AZURE_KEY", key)
    with FaultServer(azure_api_version="2024-10-21", api_key=key) as server:
        base = {"provider": "openai", "base_url": server.url, "model": server.model,
                "api_key_env": "WC_AZURE_KEY", **FAST}
        cfg = from_dict(LLMConfig, {**base, "query_params": {"api-version": "2024-10-21"},
                                    "auth_header": "api-key"}, "llm")
        with open_client(cfg, cache_path=tmp_path / "c.sqlite") as client:
            (answer,) = client.chat_many([ask("q")], progress=False)
        bearer = from_dict(LLMConfig, {**base, "query_params": {"api-version": "2024-10-21"}},
                           "llm")
        with open_client(bearer, cache_path=tmp_path / "d.sqlite") as client:
            with pytest.raises(LLMRequestError, match="HTTP 401"):
                client.chat_many([ask("q")], progress=False)
        with open_client(from_dict(LLMConfig, {**base, "auth_header": "api-key"}, "llm"),
                         cache_path=tmp_path / "e.sqlite") as client:
            with pytest.raises(LLMRequestError, match="HTTP 404"):
                client.chat_many([ask("q")], progress=False)
    assert answer.ok
    assert server.queries[0] == {"api-version": "2024-10-21"}
    assert server.key_headers[0] == key and server.auth_headers[0] == ""
    assert server.auth_headers[1] == f"Bearer {key}" and server.key_headers[1] == ""
    with pytest.raises(ConfigError, match="llm.base_url.*llm.query_params"):
        from_dict(LLMConfig, {**base, "base_url": server.url + "?api-version=2024-10-21"},
                  "llm")
    with pytest.raises(ConfigError, match="llm.query_params: expected no credentials") as info:
        from_dict(LLMConfig, {**base, "query_params": {"api-key": key}}, "llm")
    assert key not in str(info.value)
    with pytest.raises(ConfigError, match="llm.query_params"):
        from_dict(LLMConfig, {**base, "query_params": {"x": "sk-" + "a1B2" * 10}}, "llm")


def test_per_request_models_have_their_own_cache_keys_and_report_served_names(tmp_path):
    served = {"fault-model": "fault-model-2026-01-01", "judge-model": "judge-model-0613"}
    with FaultServer(served_models=served) as server:
        cfg = from_dict(LLMConfig, {"provider": "openai", "base_url": server.url,
                                    "model": server.model, "api_key_env": "WC_NO_KEY",
                                    **FAST}, "llm")
        with open_client(cfg, cache_path=tmp_path / "c.sqlite") as client:
            a, b = client.chat_many([ask("q"), ask("q", model="judge-model")], progress=False)
            again = client.chat_many([ask("q", model="judge-model")], progress=False)
            assert client.wire.identity("judge-model") == \
                f"openai:judge-model@{server.url.split('//')[1]}"
    assert sorted(body["model"] for body in server.bodies) == ["fault-model", "judge-model"]
    assert a.model == "fault-model-2026-01-01" and b.model == "judge-model-0613"
    assert again[0].cached and again[0].model == "judge-model-0613"
    assert server.total == 2


def test_a_cache_that_cannot_be_written_stops_new_sends_at_once(tmp_path):
    """An exclusive lock on the cache (another process writing, a stuck tool) makes every
    commit fail: the client must stop sending instead of buying answers it cannot keep."""
    path = tmp_path / "c.sqlite"
    RequestCache(path).close()
    lock: list[sqlite3.Connection] = []

    def responder(body):
        if body["messages"][-1]["content"] == "p5" and not lock:
            # Taken by another connection while p5 is being answered: from now on every
            # write waits busy_timeout and fails with "database is locked".
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("BEGIN EXCLUSIVE")
            lock.append(db)
        return Reply(answer_text(body["messages"][-1]["content"]))

    prompts = [f"p{i}" for i in range(40)]
    with FaultServer(responder=responder, latency=0.05) as server:
        cfg = LLMConfig(provider="openai", base_url=server.url, model=server.model,
                        max_in_flight=2, **FAST)
        client = LLMClient(cfg, server.url, "k", "fault-identity",
                           RequestCache(path, busy_timeout_s=0.3))
        with pytest.raises(ExternalError) as info:
            client.chat_many([ask(p) for p in prompts], progress=False)
        sent = server.total
        message = str(info.value)
        lock[0].execute("ROLLBACK")
        lock[0].close()
        with RequestCache(path) as cache:
            stored = len(cache)
        # Rerun: the answers stored before the lock are not bought again.
        rerun = make_client(server, path).chat_many([ask(p) for p in prompts], progress=False)
    assert "cannot write the LLM request cache" in message and "locked" in message
    assert "sending stopped at once" in message and "not sent" in message
    # p0..p3 at least were stored before the lock; after it, no more than the two slots in
    # flight (p5 and its neighbour) plus the two that took the freed slots were sent.
    assert 4 <= stored <= 5 and sent <= 6 + 2, (stored, sent)
    assert sum(not r.cached for r in rerun) == 40 - stored
    assert [r.text for r in rerun] == [answer_text(p) for p in prompts]


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
        kill_when(child, lambda: server.counts["q4"] > 0,  # q0..q3 answered, q4 hanging
                  timeout=30, what="child never reached the slow request")
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


def test_cache_transaction_commits_many_answers_at_once_or_none(tmp_path):
    """A Batch API output file is stored in chunks of one commit each; a failure inside a
    chunk stores none of it (the batch's output can be fetched again)."""
    from wizardcoder.llm.cache import RequestCache

    def put(cache, key):
        cache.put(key, model_identity="m", request={}, text=key, finish_reason="stop",
                  prompt_tokens=1, completion_tokens=1, model="m")

    with RequestCache(tmp_path / "c.sqlite") as cache:
        with cache.transaction():
            for i in range(3):
                put(cache, f"k{i}")
        with pytest.raises(RuntimeError), cache.transaction():
            put(cache, "lost")
            raise RuntimeError("killed mid-chunk")
        put(cache, "after")  # the cache is usable again
    with RequestCache(tmp_path / "c.sqlite") as again:  # what reached the disk
        assert [again.get(k) is not None for k in ("k0", "k1", "k2", "lost", "after")] == \
            [True, True, True, False, True]


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (a 'remote' server for the client)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


class RestartingServer:
    """A chat server on ``host`` that answers one request, stops listening for ``down_s``
    (connections are refused), then listens on the same port again: a server restarting."""

    def __init__(self, host: str, down_s: float):
        self.host, self.down_s = host, down_s
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}/v1"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.listen(16)
        return sock

    def _answer_one(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            while len(body) < length:
                body += conn.recv(65536)
            prompt = json.loads(body)["messages"][0]["content"]
            reply = json.dumps(completion("fault-model", answer_text(prompt), "stop", 1))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(reply), reply.encode()))

    def _serve(self) -> None:
        self._answer_one()
        self.listener.close()  # down: nothing listens on the port
        time.sleep(self.down_s)
        self.listener = self._listen(self.port)
        self._answer_one()
        self.listener.close()


@pytest.mark.parametrize("where", ["loopback", "remote"])
def test_refused_connections_fail_at_once_unless_a_remote_server_answered_before(tmp_path,
                                                                                where):
    """A refused connection means nothing listens: a local server (or one that never
    answered) fails the stage at once, naming the URL and how to start the server; a remote
    server that has answered is restarting, and the request is retried until it is back."""
    host = "127.0.0.1" if where == "loopback" else non_loopback_address()
    if host is None:
        pytest.skip("this machine has no non-loopback address")
    server = RestartingServer(host, down_s=0.5)
    cfg = LLMConfig(provider="openai", base_url=server.url, model="fault-model",
                    max_retries=100, backoff_initial_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
    client = LLMClient(cfg, server.url, "k", "fault-identity", RequestCache(tmp_path / "c"))
    (first,) = client.chat_many([ask("before")], progress=False)
    assert first.ok and client.server_answered
    start = time.monotonic()
    if where == "loopback":
        with pytest.raises(LLMServerUnreachable) as info:
            client.chat_many([ask("after")], progress=False)
        assert time.monotonic() - start < 0.5 and client.stats["retries"] == 0
        assert str(info.value).startswith(f"nothing answers at {server.url} (llm.base_url: "
                                          "connection refused)")
        assert f"--model_alias fault-model --host 127.0.0.1 --port {server.port}`" \
            in str(info.value)
    else:
        (after,) = client.chat_many([ask("after")], progress=False)
        assert after.ok and after.text == answer_text("after")
        assert client.stats["retries"] >= 1 and time.monotonic() - start >= 0.4


def test_a_server_that_is_not_there_fails_when_the_client_opens(tmp_path):
    """open_client checks the port before anything else runs: one connect, no request."""
    with FaultServer() as server:
        url = server.url  # a port that was just in use; now nothing listens there
    cfg = LLMConfig(provider="openai", base_url=url, model="some-model")
    start = time.monotonic()
    with pytest.raises(ExternalError, match=re.escape(f"nothing answers at {url} (llm.base_url")):
        with open_client(cfg, cache_path=tmp_path / "c.sqlite"):
            pass
    assert time.monotonic() - start < 1.0
    # a server that never answered is not there either, wherever it is (no retries)
    client = LLMClient(cfg, url, "k", "fault-identity", RequestCache(tmp_path / "c"))
    with pytest.raises(LLMServerUnreachable):
        client.chat_many([ask("q")], progress=False)
    assert client.stats["retries"] == 0 and client.stats["calls"] == 1
