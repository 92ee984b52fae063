"""``llm.mode: batch`` against the tests' own Batch API server (tests/fake_openai.py).

Everything goes over real HTTP through the real client, cache and evolve stage: uploads are
multipart, batches move through validating/in_progress/completed, the server refuses files
that break OpenAI's rules (too many lines or bytes, mixed models), and output/error files
carry per-line answers and failures. The server counts every batch created (each one is money
at OpenAI), so resuming after a kill is checked by that count, not by logs.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fake_openai import CONTEXT_LENGTH, SERVER_ERROR, BatchServer, FaultServer, line_error
from tests.kill_resume import finish, kill_when, wait_for
from tests.test_evolve_engine import FAST, PRICES, client_for, responder, seed_rows
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError, ExternalError
from wizardcoder.evolve.config import EvolveConfig
from wizardcoder.evolve.engine import evolve_round
from wizardcoder.jsonl import write_jsonl
from wizardcoder.llm import ChatRequest, LLMConfig
from wizardcoder.llm import batch as batch_mod
from wizardcoder.llm.batch import split_files
from wizardcoder.llm.batch_state import BatchState, state_path
from wizardcoder.llm.limits import Budget, BudgetExceeded

REPO = Path(__file__).resolve().parents[1]
BATCH = {"mode": "batch", "batch_poll_s": 0.02, "batch_poll_max_s": 0.1}
KEY_ENV = "WC_BATCH_TEST_KEY"
KEY = "sk-batch-" + "N0tF0rF1l3s" * 3
# [ctx]: the evolve call gets 400 context_length_exceeded; [null]: the answer has content null.
MARKERS = ["[cut]", "[refuse]", "[same]", "[copy]", "[ctx]", "[null]"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache_dir"))
    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")


def requests(prompts, model=None) -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": p}], max_tokens=16, seed=7, model=model,
                        tag=p) for p in prompts]


def uploaded_lines(server: BatchServer) -> list[list[dict]]:
    """The request lines of each uploaded input file, in upload order."""
    files = [f for f in sorted(server.files.values(), key=lambda f: f["id"])
             if f["purpose"] == "batch"]
    return [[json.loads(x) for x in f["content"].decode().splitlines()] for f in files]


def round_config() -> EvolveConfig:
    return from_dict(EvolveConfig, {"max_failed_fraction": 0.5}, "evolve")


def test_round_in_batch_mode_equals_the_online_round_and_sends_no_online_call(tmp_path):
    rows = seed_rows(MARKERS, plain=4)
    with BatchServer(responder=responder) as server:
        client = client_for(server, tmp_path / "batch.sqlite", **BATCH)
        out, rejected, stats = evolve_round(rows, round_config(), client, "r1",
                                            model="fault-model", progress=False)
        assert server.chat_bodies == []  # every answer came from a batch
        batches = server.created
        lines = [line for file in uploaded_lines(server) for line in file]

        online = client_for(server, tmp_path / "online.sqlite")
        out2, rejected2, stats2 = evolve_round(rows, round_config(), online, "r1",
                                               model="fault-model", progress=False)
        online_bodies = list(server.chat_bodies)

        again = client_for(server, tmp_path / "batch.sqlite", **BATCH)
        out3, _, stats3 = evolve_round(rows, round_config(), again, "r1", model="fault-model",
                                       progress=False)
        assert server.created == batches and len(server.chat_bodies) == len(online_bodies)

    assert batches == 3  # one per step: evolve, judge, answer
    assert out == out2 == out3 and rejected == rejected2
    # The batch lines are byte for byte the bodies the online client sends.
    assert sorted(json.dumps(line["body"], sort_keys=True) for line in lines) == \
        sorted(json.dumps(b, sort_keys=True) for b in online_bodies)
    assert all(line["url"] == "/v1/chat/completions" and line["method"] == "POST"
               for line in lines)
    assert len({line["custom_id"] for line in lines}) == len(lines)
    # Batch answers were paid in this run: counted as network calls, like the online ones.
    for key in ("network_calls", "cache_hits", "cost_usd", "request_errors", "dropped_by_rule"):
        assert stats[key] == stats2[key], key
    assert stats["network_calls"] == len(lines) and stats["cost_usd"] > 0
    assert stats3["network_calls"] == 0 and stats3["cache_hits"] == len(lines)
    assert stats["request_errors"]["context_length"] == 1
    assert stats["request_errors"]["empty_content"] == 1
    carried = {r["id"]: r for r in out if r.get("carried")}
    ctx_row = next(r for r in rows if "[ctx]" in r["instruction"])
    assert carried[ctx_row["id"]]["carried_rule"] == "request_error"


def test_line_failures_permanent_cached_transient_retried_in_a_new_batch(tmp_path):
    prompts = ["p-ok", "p-ctx", "p-500", "p-expired", "p-429"]
    script = {"p-ctx": [CONTEXT_LENGTH], "p-500": [SERVER_ERROR],
              "p-expired": [line_error("batch_expired", "not run before the window ended")],
              "p-429": [("429", "1")]}
    with BatchServer(script=script) as server:
        client = client_for(server, tmp_path / "c.sqlite", **BATCH)
        results = dict(zip(prompts, client.chat_many(requests(prompts), progress=False),
                           strict=True))
        first = dict(server.line_counts)
        assert server.created == 1
        assert results["p-ok"].ok and results["p-ok"].text == "answer to p-ok"
        assert not results["p-ok"].cached and results["p-ok"].attempts == 1
        assert results["p-ctx"].error == "context_length"
        assert "maximum context length" in results["p-ctx"].error_message
        for tag in ("p-500", "p-expired", "p-429"):
            assert results[tag].error == "retries_exhausted", tag
            assert results[tag].error_message.startswith("batch "), tag

        # Rerun: the cached answer and the cached permanent failure are not asked again;
        # the three transient ones go into one new batch and are answered.
        rerun = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(prompts), progress=False)
        assert server.created == 2
        assert [line["body"]["messages"][-1]["content"] for line in uploaded_lines(server)[1]] \
            == ["p-500", "p-expired", "p-429"]
        assert {p: server.line_counts[p] - first.get(p, 0) for p in prompts} == \
            {"p-ok": 0, "p-ctx": 0, "p-500": 1, "p-expired": 1, "p-429": 1}
        assert server.chat_bodies == []
    by_tag = dict(zip(prompts, rerun, strict=True))
    assert by_tag["p-ok"].cached and by_tag["p-ctx"].cached
    assert by_tag["p-ctx"].error == "context_length"
    assert all(by_tag[t].ok and not by_tag[t].cached for t in ("p-500", "p-expired", "p-429"))


def test_a_line_failing_as_every_request_would_stops_the_step(tmp_path):
    script = {"s1": [("status", 401, "Incorrect API key provided: sk-proj-Abc123xyz")]}
    with BatchServer(script=script) as server:
        with pytest.raises(ExternalError, match="every request would") as info:
            client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
                requests(["s0", "s1"]), progress=False)
        [s0, s1] = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["s0", "s1"]), progress=False)
    assert "sk-proj" not in str(info.value) and "[redacted]" in str(info.value)
    assert s0.cached and s0.text == "answer to s0"  # stored before the stage stopped
    assert not s1.cached and s1.text == "answer to s1"  # not cached: sent again


def test_resend_cached_errors_sends_them_in_a_new_batch(tmp_path):
    with BatchServer(script={"e0": [CONTEXT_LENGTH]}) as server:
        [first] = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["e0"]), progress=False)
        [replayed] = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["e0"]), progress=False)
        assert server.created == 1
        [resent] = client_for(server, tmp_path / "c.sqlite", resend_cached_errors=True,
                              **BATCH).chat_many(requests(["e0"]), progress=False)
        assert server.created == 2
    assert first.error == replayed.error == "context_length" and replayed.cached
    assert resent.ok and resent.text == "answer to e0" and not resent.cached


def test_expired_batch_keeps_its_answers_and_resubmits_only_the_unfinished(tmp_path):
    prompts = [f"q{i}" for i in range(5)]
    with BatchServer(expire_after=2) as server:
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(prompts), progress=False)
        assert server.batches[next(iter(server.batches))]["status"] == "expired"
        assert [r.ok for r in results] == [True, True, False, False, False]
        assert {r.error for r in results[2:]} == {"retries_exhausted"}
        server.expire_after = None
        again = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(prompts), progress=False)
        assert server.created == 2
        assert [line["custom_id"] for line in uploaded_lines(server)[1]] == \
            [line["custom_id"] for line in uploaded_lines(server)[0][2:]]
    assert [r.text for r in again] == [f"answer to {p}" for p in prompts]
    assert [r.cached for r in again] == [True, True, False, False, False]


def test_more_requests_than_a_file_holds_are_split_by_count_bytes_and_model(tmp_path):
    prompts = [f"split {i} " + "x" * (200 if i % 3 == 0 else 10) for i in range(11)]
    reqs = requests(prompts) + requests(["other model a", "other model b"], model="m2")
    with BatchServer(max_requests_per_file=4, max_bytes_per_file=1200) as server:
        client = client_for(server, tmp_path / "c.sqlite", batch_max_requests=4,
                            batch_max_bytes=1200, **BATCH)
        results = client.chat_many(reqs, progress=False)
        files = uploaded_lines(server)
        sizes = [len(f["content"]) for f in server.files.values() if f["purpose"] == "batch"]
    assert all(r.ok for r in results) and [r.text for r in results][:11] == \
        [f"answer to {p}" for p in prompts]
    assert server.created == len(files) >= 5
    assert all(len(f) <= 4 for f in files) and all(s <= 1200 for s in sizes)
    assert all(len({line["body"]["model"] for line in f}) == 1 for f in files)
    assert sorted(line["custom_id"] for f in files for line in f) == \
        sorted({client.wire.key(r) for r in reqs})


def test_budget_submits_only_what_fits_and_nothing_goes_online(tmp_path):
    reqs = requests(["b0", "b1", "b2", "b3"])
    with BatchServer() as server:
        client = client_for(server, tmp_path / "c.sqlite", **BATCH)
        prices = client.config.prices
        worst = Budget(0, prices).worst_case(reqs[0].estimated_prompt_tokens(), 16)
        budget = Budget(2.5 * worst, prices)
        with pytest.raises(BudgetExceeded):
            client.chat_many(reqs, progress=False, budget=budget)
        assert [len(f) for f in uploaded_lines(server)] == [2]
        assert budget.sent_usd > 0 and budget.cached_usd == 0
        bigger = Budget(10 * worst, prices)
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            reqs, progress=False, budget=bigger)
        assert [len(f) for f in uploaded_lines(server)] == [2, 2]
        assert server.chat_bodies == []
    assert [r.cached for r in results] == [True, True, False, False]
    assert bigger.cached_usd == pytest.approx(budget.sent_usd)


def test_split_files_unit():
    lines = [("m", f"k{i}", b"x" * n) for i, n in enumerate([5, 5, 5, 9, 1])]
    assert [[k for k, _ in f] for f in split_files(lines, 2, 10)] == \
        [["k0", "k1"], ["k2"], ["k3", "k4"]]
    with pytest.raises(ExternalError, match="batch_max_bytes"):
        split_files([("m", "k", b"x" * 11)], 5, 10)


def test_a_refused_batch_stops_the_step_naming_the_reason_and_is_resubmitted(tmp_path):
    with BatchServer(max_requests_per_file=2) as server:
        client = client_for(server, tmp_path / "c.sqlite", batch_max_requests=3, **BATCH)
        with pytest.raises(ExternalError, match=r"batch-\d+ failed: too_many_requests"):
            client.chat_many(requests(["a", "b", "c"]), progress=False)
        server.max_requests_per_file = 3
        results = client_for(server, tmp_path / "c.sqlite", batch_max_requests=3,
                             **BATCH).chat_many(requests(["a", "b", "c"]), progress=False)
        assert server.created == 2
    assert [r.text for r in results] == ["answer to a", "answer to b", "answer to c"]


def test_kill_between_creating_a_batch_and_recording_it_adopts_that_batch(tmp_path,
                                                                          monkeypatch):
    real = BatchState.set_batch

    def killed(self, file_id, batch_id):
        raise KeyboardInterrupt  # the process dies after POST /batches returned

    with BatchServer() as server:
        monkeypatch.setattr(BatchState, "set_batch", killed)
        with pytest.raises(KeyboardInterrupt):
            client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
                requests(["u", "v"]), progress=False)
        monkeypatch.setattr(BatchState, "set_batch", real)
        assert server.created == 1
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["u", "v"]), progress=False)
        assert server.created == 1 and server.requests["POST /v1/files"] == 1
        assert server.requests["GET /v1/batches"] == 1  # found by its input file id
    assert [r.text for r in results] == ["answer to u", "answer to v"]


def test_poll_failures_are_retried_then_stop_the_stage_and_the_rerun_resumes(tmp_path):
    with BatchServer() as server:
        server.fail_polls = 2  # max_retries is 2: survived
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["r0"]), progress=False)
        assert results[0].ok and server.created == 1
        server.fail_polls = 100
        with pytest.raises(ExternalError, match="rerun the stage to resume polling"):
            client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
                requests(["r1"]), progress=False)
        server.fail_polls = 0
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["r1"]), progress=False)
        assert results[0].text == "answer to r1" and server.created == 2


def test_a_lost_answer_to_batch_creation_is_not_a_second_batch(tmp_path):
    with BatchServer() as server:
        server.lose_creates = 1  # created at the provider, but the client sees a 502
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["once"]), progress=False)
        assert server.requests["POST /v1/batches"] == 1 and len(server.batches) == 1
        assert server.requests["GET /v1/batches"] >= 1  # looked up by its input file
    assert results[0].text == "answer to once"


def test_a_recorded_batch_the_server_does_not_know_is_submitted_again(tmp_path):
    with BatchServer() as server:
        client = client_for(server, tmp_path / "c.sqlite", **BATCH)
        [req] = requests(["lost"])
        state = BatchState(state_path(tmp_path / "c.sqlite"))
        state.add_file("file-gone", client.model_identity,
                       {client.wire.key(req): client.wire.body(req)})
        state.set_batch("file-gone", "batch-gone")
        state.close()
        [first] = client.chat_many([req], progress=False)
        assert first.error == "retries_exhausted" and "not found" in first.error_message
        assert server.created == 0
        [second] = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            [req], progress=False)
        assert second.text == "answer to lost" and server.created == 1


def test_batch_config_is_validated():
    with pytest.raises(ConfigError, match="llm.mode"):
        LLMConfig(mode="batch")  # the embedded provider has no Batch API
    with pytest.raises(ConfigError, match="llm.mode"):
        LLMConfig(provider="openai", model="gpt-4o-mini", mode="offline")
    with pytest.raises(ConfigError, match="llm.batch_max_requests"):
        LLMConfig(provider="openai", model="gpt-4o-mini", mode="batch",
                  batch_max_requests=50_001)
    with pytest.raises(ConfigError, match="llm.batch_max_bytes"):
        LLMConfig(provider="openai", model="gpt-4o-mini", batch_max_bytes=300_000_000)
    with pytest.raises(ConfigError, match="llm.batch_poll_max_s"):
        LLMConfig(provider="openai", model="gpt-4o-mini", batch_poll_s=60, batch_poll_max_s=5)


def test_online_mode_never_touches_the_batch_endpoints(tmp_path):
    with FaultServer() as server:
        client_for(server, tmp_path / "c.sqlite").chat_many(requests(["o"]), progress=False)
    assert not state_path(tmp_path / "c.sqlite").exists()
    assert batch_mod.ENDPOINT == "/v1/chat/completions"


# -- the real stage, SIGKILLed while it polls ------------------------------------------------


def make_workdir(root: Path, url: str) -> Path:
    root.mkdir(parents=True)
    write_jsonl(root / "data" / "seed.jsonl", seed_rows(MARKERS, plain=4))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["rounds"] = {"r1": "data/seed.jsonl"}
    params["evolve"]["max_failed_fraction"] = 0.5
    params["llm"] = {"provider": "openai", "base_url": url, "model": "fault-model",
                     "api_key_env": KEY_ENV, **FAST, **PRICES, **BATCH}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def stage(workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WIZARDCODER_CACHE_DIR": str(workdir / "cache"),
           "WIZARDCODER_MLFLOW": "0", KEY_ENV: KEY}
    cmd = [sys.executable, "-m", "stages.evolve", "--params", "params.yaml", "--round", "r1",
           "--input", "data/seed.jsonl", "--out", "data/evolved/r1.jsonl",
           "--rejected", "data/rejected/r1.jsonl", "--metrics", "metrics/evolve/r1.json"]
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def recorded_batches(workdir: Path) -> list[tuple]:
    path = state_path(workdir / "cache" / "llm_requests.sqlite")
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT batch_id, finished FROM batch_files").fetchall()
        except sqlite3.OperationalError:
            return []


def test_sigkill_while_polling_then_rerun_resumes_the_same_batch(tmp_path):
    with BatchServer(responder=responder, hold=True) as server:
        crashed = make_workdir(tmp_path / "crashed", server.url)
        # killed once the evolve batch is recorded and has been polled
        logs = kill_when(stage(crashed), lambda: (
            server.requests["GET /v1/batches/{id}"] >= 2
            and any(b for b, _ in recorded_batches(crashed))),
            timeout=60, what="the stage never submitted its batch")
        assert server.created == 1 and not (crashed / "data/evolved/r1.jsonl").exists()
        [(held, finished)] = recorded_batches(crashed)
        assert finished is None

        polls = server.requests["GET /v1/batches/{id}"]
        rerun = stage(crashed)
        wait_for(rerun, lambda: server.requests["GET /v1/batches/{id}"] >= polls + 2,
                 timeout=60, what="the rerun never polled")  # the rerun is polling
        assert server.created == 1  # ... the held batch, instead of submitting another
        server.release()
        logs += finish(rerun)
        assert server.created == 3  # the evolve batch (resumed), then judge and answer
        assert server.batches[held]["status"] == "completed"
        lines_crashed = sum(len(f) for f in uploaded_lines(server))

        clean = make_workdir(tmp_path / "clean", server.url)
        logs += finish(stage(clean))
        assert server.created == 6
        assert sum(len(f) for f in uploaded_lines(server)) == 2 * lines_crashed
        auth = set(server.auth_headers)
        files = [f["content"].decode() for f in server.files.values()]

    assert server.chat_bodies == []
    assert auth == {f"Bearer {KEY}"}  # the key went in the header, and only there
    for name in ("data/evolved/r1.jsonl", "data/rejected/r1.jsonl"):
        assert (crashed / name).read_text() == (clean / name).read_text()
    metrics = json.loads((crashed / "metrics/evolve/r1.json").read_text())
    assert metrics["rows_in"] == len(MARKERS) + 4
    texts = [logs, *files] + [p.read_bytes().decode("utf-8", "replace")
                              for d in (crashed, clean) for p in d.rglob("*") if p.is_file()]
    for text in texts:
        assert KEY not in text and KEY[:12] not in text
