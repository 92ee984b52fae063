"""The embedded llama.cpp server with the bundled SmolLM2 GGUF: answers, and always goes away.

A leaked model server keeps cores, memory and a port after a stage ends, and on a shared
machine that breaks the next stage silently, so every way out is checked: normal exit, an
exception in the body, SIGTERM to the owner, and SIGKILL of the owner (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wizardcoder.llm import ChatRequest, EmbeddedServer, LLMClient, LLMConfig, RequestCache
from wizardcoder.llm.server import embedded_identity, open_client

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed (yet): "
                              "pip install 'llama-cpp-python[server]'"),
]

REPO = Path(__file__).resolve().parents[1]
CONFIG = LLMConfig(embedded_n_threads=2, embedded_n_ctx=512, timeout_s=60)


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache_dir"))


def live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (PID 1 in a container may not reap)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def wait_gone(pgid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while live_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def requests() -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": prompt}], max_tokens=24, tag=f"r{i}")
            for i, prompt in enumerate(["Say hello.", "Name a Python keyword."])]


def test_answers_chat_requests_and_stops(tmp_path):
    with EmbeddedServer(CONFIG) as server:
        pgid = server.pgid
        assert live_members(pgid)
        assert server.log_path.parent == tmp_path / "cache_dir"
        client = LLMClient(CONFIG, server.base_url, None,
                           embedded_identity(CONFIG, server.gguf_path),
                           RequestCache(tmp_path / "c.sqlite"))
        start = time.monotonic()
        results = client.chat_many(requests(), progress=False)
        elapsed = time.monotonic() - start
    assert not live_members(pgid), "server process group survived a normal exit"
    assert server.process is None and server.port is None
    for r in results:
        assert r.text.strip() and r.completion_tokens > 0 and r.prompt_tokens > 0
        assert r.finish_reason in ("stop", "length") and not r.cached
    assert client.stats["calls"] == 2
    assert client.stats["completion_tokens"] == sum(r.completion_tokens for r in results)
    print(f"embedded: {client.stats['completion_tokens'] / elapsed:.1f} completion tokens/s")


def test_stops_when_the_body_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with EmbeddedServer(CONFIG) as server:
            pgid = server.pgid
            raise RuntimeError("boom")
    assert not live_members(pgid)


def test_cache_identity_ignores_the_port(tmp_path):
    cache = tmp_path / "c.sqlite"
    with open_client(CONFIG, cache_path=cache) as client:
        first = client.chat_many(requests()[:1], progress=False)
    # A new server on a (usually) new port: the answer must still come from the cache.
    with open_client(CONFIG, cache_path=cache) as client:
        again = client.chat_many(requests()[:1], progress=False)
    assert client.stats["calls"] == 0 and again[0].cached and again[0].text == first[0].text


OWNER = textwrap.dedent("""
    import sys, time
    from wizardcoder.llm import EmbeddedServer, LLMConfig
    cfg = LLMConfig(embedded_n_threads=1, embedded_n_ctx=256)
    with EmbeddedServer(cfg) as server:
        print(server.pgid, flush=True)
        time.sleep(120)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_server_dies_with_its_owner(sig):
    owner = subprocess.Popen([sys.executable, "-c", OWNER], cwd=REPO, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = owner.stdout.readline()
        assert line.strip().isdigit(), f"owner did not start a server: {line!r}"
        pgid = int(line)
        assert live_members(pgid)
        owner.send_signal(sig)
        code = owner.wait(timeout=30)
    finally:
        if owner.poll() is None:
            owner.kill()
    # SIGTERM becomes SystemExit(143) so `with` blocks unwind; SIGKILL leaves it to the kernel.
    assert code == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
    assert wait_gone(pgid), f"server group {pgid} outlived its owner ({sig.name})"


def test_a_server_that_stops_mid_run_fails_the_next_request_at_once(tmp_path):
    """The embedded server dies (OOM killer, a crash): the next request fails without
    retrying, naming its URL and the command it ran as."""
    from wizardcoder.llm.client import LLMServerUnreachable

    with EmbeddedServer(CONFIG) as server:
        client = LLMClient(CONFIG, server.base_url, None,
                           embedded_identity(CONFIG, server.gguf_path),
                           RequestCache(tmp_path / "c.sqlite"),
                           server_command=server.start_command())
        assert client.chat_many(requests()[:1], progress=False)[0].text.strip()
        url, pgid = server.base_url, server.pgid
        os.killpg(pgid, signal.SIGKILL)
        assert wait_gone(pgid)
        start = time.monotonic()
        with pytest.raises(LLMServerUnreachable) as info:
            client.chat_many(requests()[1:], progress=False)
        elapsed = time.monotonic() - start
    message = str(info.value)
    assert message.startswith(f"nothing answers at {url} (the embedded llama.cpp server: "
                              "connection refused: it has stopped)")
    assert f"`python -m llama_cpp.server --model {server.gguf_path} " in message
    assert f"--port {url.split(':')[-1].split('/')[0]} " in message
    # A request that went out on a pooled keep-alive connection the dead server dropped sees a
    # reset, not a refusal: that one retry is allowed, the refusal after it ends the run.
    assert client.stats["retries"] <= 1 and elapsed < 2.0, (client.stats, elapsed)
