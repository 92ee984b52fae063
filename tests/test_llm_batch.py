"""``llm.mode: batch`` against the tests' own Batch API server (tests/fake_openai.py).

Everything goes over real HTTP through the real client, cache and evolve stage: uploads are
multipart, batches move through validating/in_progress/completed, the server refuses files
that break OpenAI's rules (too many lines or bytes, mixed models), and output/error files
carry per-line answers and failures. The server counts every batch created (each one is money
at OpenAI), so resuming after a kill is checked by that count, not by logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
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
from wizardcoder.llm.batch_api import BatchApi
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


class Flaky:
    """A responder whose answers fail transiently the first time for about a third of the
    prompts (500 online and as a batch line), then answer as ``responder`` does."""

    def __init__(self):
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, body: dict):
        prompt = str(body["messages"][-1]["content"])
        with self.lock:
            first = prompt not in self.seen
            self.seen.add(prompt)
        if first and hashlib.sha256(prompt.encode()).digest()[0] % 3 == 0:
            return SERVER_ERROR
        return responder(body)


def test_a_round_under_faults_writes_the_rows_of_a_clean_run_and_of_online_mode(tmp_path):
    """5xx lines, expired batches (lines never run), shuffled output files, a lost create
    behind 1,100 newer batches and failing polls: the same rows as a clean batch run and as
    an online run under the same 5xx faults, and no line paid twice."""
    rows = seed_rows(MARKERS, plain=24)
    with BatchServer(responder=Flaky(), expire_after=12) as server:
        server.shuffle = True
        server.lose_creates, server.flood_after_lost_create = 1, 1100
        server.fail_polls = 3
        client = client_for(server, tmp_path / "faulty.sqlite", batch_retries=6, **BATCH)
        out, rejected, stats = evolve_round(rows, round_config(), client, "r1",
                                            model="fault-model", progress=False)
        assert server.chat_bodies == []
        assert max(server.paid.values()) == 1  # no request paid twice
        assert any(b["status"] == "expired" for b in server.batches.values())
        assert len(server.batches) > 3 + 1100  # follow-up batches were needed
    with BatchServer(responder=responder) as clean_server:
        clean = evolve_round(rows, round_config(),
                             client_for(clean_server, tmp_path / "clean.sqlite", **BATCH),
                             "r1", model="fault-model", progress=False)
    with FaultServer(responder=Flaky()) as online_server:
        online = evolve_round(rows, round_config(),
                              client_for(online_server, tmp_path / "online.sqlite"), "r1",
                              model="fault-model", progress=False)
        assert sum(online_server.counts.values()) > len(online_server.answered)  # 500s
    assert out == clean[0] == online[0] and rejected == clean[1] == online[1]
    assert stats["kept"] == clean[2]["kept"] and stats["failed_rows"] == clean[2]["failed_rows"]
    assert sorted(r["class"] for r in stats["failed_rows"]) == ["context_length",
                                                               "empty_content"]


@pytest.mark.parametrize("mode", ["batch", "online"])
def test_two_permanent_failures_in_sixty_rows_pass_the_default_budget(tmp_path, mode):
    rows = seed_rows(["[ctx]", "[ctx] again"], plain=58)
    with BatchServer(responder=responder) as server:
        client = client_for(server, tmp_path / "c.sqlite", **(BATCH if mode == "batch" else {}))
        out, _, stats = evolve_round(rows, EvolveConfig(), client, "r1", model="fault-model",
                                     progress=False)
    assert stats["failed_rows"] == [{"id": "seed00", "step": "evolve", "class": "context_length"},
                                    {"id": "seed01", "step": "evolve", "class": "context_length"}]
    assert len(out) == 60 and [r.get("carried_error") for r in out[:2]] == ["context_length"] * 2


def test_line_failures_permanent_cached_transient_retried_in_a_follow_up_batch(tmp_path):
    prompts = ["p-ok", "p-ctx", "p-500", "p-expired", "p-429"]
    script = {"p-ctx": [CONTEXT_LENGTH], "p-500": [SERVER_ERROR],
              "p-expired": [line_error("batch_expired", "not run before the window ended")],
              "p-429": [("429", "1")]}
    with BatchServer(script=script) as server:
        server.shuffle = True
        client = client_for(server, tmp_path / "c.sqlite", **BATCH)
        results = dict(zip(prompts, client.chat_many(requests(prompts), progress=False),
                           strict=True))
        # One call: the three transient lines went into a follow-up batch of their own.
        assert server.created == 2
        assert sorted(line["body"]["messages"][-1]["content"]
                      for line in uploaded_lines(server)[1]) == ["p-429", "p-500", "p-expired"]
        assert dict(server.line_counts) == {"p-ok": 1, "p-ctx": 1, "p-500": 2,
                                            "p-expired": 2, "p-429": 2}
        assert results["p-ok"].ok and results["p-ok"].text == "answer to p-ok"
        assert not results["p-ok"].cached and results["p-ok"].attempts == 1
        assert results["p-ctx"].error == "context_length"
        assert "maximum context length" in results["p-ctx"].error_message
        for tag in ("p-500", "p-expired", "p-429"):
            assert results[tag].ok and results[tag].text == f"answer to {tag}", tag

        # Rerun: everything is cached (the permanent failure too); nothing is sent.
        rerun = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(prompts), progress=False)
        assert server.created == 2 and server.chat_bodies == []
    assert all(r.cached for r in rerun)
    assert [r.error for r in rerun] == [None, "context_length", None, None, None]


def test_lines_failing_through_every_follow_up_are_not_cached_and_a_rerun_retries(tmp_path):
    with BatchServer(script={"t-500": [SERVER_ERROR] * 3}) as server:
        [ok, failed] = client_for(server, tmp_path / "c.sqlite", batch_retries=1,
                                  **BATCH).chat_many(requests(["t-ok", "t-500"]),
                                                     progress=False)
        assert server.created == 2  # the batch and one follow-up (llm.batch_retries=1)
        assert ok.ok and failed.error == "retries_exhausted"
        assert "HTTP 500" in failed.error_message and "in 2 batch(es)" in failed.error_message
        [again_ok, again] = client_for(server, tmp_path / "c.sqlite", batch_retries=1,
                                       **BATCH).chat_many(requests(["t-ok", "t-500"]),
                                                          progress=False)
        assert server.created == 4  # one more 500, then answered in its follow-up
        assert server.line_counts["t-ok"] == 1
    assert again_ok.cached and again.ok and again.text == "answer to t-500"


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
        assert [b["status"] for b in server.batches.values()] == ["expired", "expired",
                                                                  "completed"]
        files = [[line["custom_id"] for line in f] for f in uploaded_lines(server)]
        # each follow-up holds exactly the lines its predecessor never ran
        assert files[1] == files[0][2:] and files[2] == files[1][2:]
        assert server.paid_lines == 5  # no line ran twice
        again = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(prompts), progress=False)
        assert server.created == 3
    assert [r.text for r in results] == [f"answer to {p}" for p in prompts]
    assert not any(r.cached for r in results) and all(r.cached for r in again)


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
        server.fail_polls = 10**6
        with pytest.raises(ExternalError, match="rerun the stage to resume polling") as info:
            client_for(server, tmp_path / "c.sqlite", batch_patience_s=0.3, **BATCH).chat_many(
                requests(["r1"]), progress=False)
        assert "llm.batch_patience_s=0.3" in str(info.value)
        server.fail_polls = 0
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["r1"]), progress=False)
        assert results[0].text == "answer to r1" and server.created == 2


def test_polling_outlasts_an_outage_far_longer_than_the_online_retries(tmp_path, caplog):
    """90 s of 503s used to end a day-long wait after 6 retries; here max_retries is 2 and
    the backoff at most 0.1 s, so the old budget was spent in well under 0.5 s."""
    caplog.set_level("INFO", logger="wizardcoder.llm.batch")
    with BatchServer(hold=True) as server:
        done: list = []
        worker = threading.Thread(target=lambda: done.append(client_for(
            server, tmp_path / "c.sqlite", **BATCH).chat_many(requests(["w0", "w1"]),
                                                              progress=False)))
        worker.start()
        wait_until(lambda: server.requests["GET /v1/batches/{id}"] >= 2)
        server.outage(2.0)
        time.sleep(1.0)
        server.release()  # the batch runs on during the outage
        worker.join(timeout=60)
        assert done and server.created == 1
        assert server.outage_hits >= 4
    assert [r.text for r in done[0]] == ["answer to w0", "answer to w1"]
    progress = [r.getMessage() for r in caplog.records if "of 2 done" in r.getMessage()]
    assert any("in_progress: 0 of 2 done" in m for m in progress)
    assert any("completed: 2 of 2 done" in m for m in progress)


def test_a_lost_create_is_found_behind_more_than_a_thousand_newer_batches(tmp_path):
    with BatchServer() as server:
        server.lose_creates = 1  # created at the provider, but the client sees a 502 ...
        server.flood_after_lost_create = 1250  # ... and the organisation creates 1,250 more
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["flooded"]), progress=False)
        assert server.requests["POST /v1/batches"] == 1 and len(server.batches) == 1251
        assert server.requests["GET /v1/batches"] >= 13  # 100 per page, back to its upload
        assert server.paid_lines == 1
    assert results[0].text == "answer to flooded"


def test_a_lost_batch_id_is_found_by_upload_time_however_many_batches_came_after(
        tmp_path, monkeypatch):
    def killed(self, file_id, batch_id):
        raise KeyboardInterrupt  # the process dies after POST /batches returned

    with BatchServer() as server:
        real = BatchState.set_batch
        monkeypatch.setattr(BatchState, "set_batch", killed)
        with pytest.raises(KeyboardInterrupt):
            client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
                requests(["k0", "k1"]), progress=False)
        monkeypatch.setattr(BatchState, "set_batch", real)
        server.add_foreign_batches(1100)
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["k0", "k1"]), progress=False)
        assert server.created == 1 and server.paid_lines == 2
        assert server.requests["GET /v1/batches"] == 12  # 1,101 batches, 100 a page
        # A file whose batch was never created: the search stops at its upload time (one
        # page here: every batch listed is older), not at the end of the list.
        lists = server.requests["GET /v1/batches"]
        assert asyncio.run(find_by_input(client_for(server, tmp_path / "c.sqlite", **BATCH),
                                         "file-never", time.time() + 5)) is None
        assert server.requests["GET /v1/batches"] == lists + 1
    assert [r.text for r in results] == ["answer to k0", "answer to k1"]


def test_ctrl_c_names_the_running_batches_and_cancel_batches_stops_them(tmp_path, caplog):
    caplog.set_level("INFO", logger="wizardcoder.llm.batch")
    with BatchServer(hold=True) as server:
        threading.Thread(target=lambda: (
            wait_until(lambda: server.requests["GET /v1/batches/{id}"] >= 1),
            os.kill(os.getpid(), signal.SIGINT)), daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
                requests(["c0", "c1"]), progress=False)
        [batch_id] = server.batches
        message = next(r.getMessage() for r in caplog.records if "interrupted" in
                       r.getMessage())
        assert batch_id in message and "--cancel-batches" in message
        assert "rerun the same command to resume" in message

        assert client_for(server, tmp_path / "c.sqlite", **BATCH).cancel_batches() == \
            [(batch_id, "cancelling")]
        wait_until(lambda: server.batches[batch_id]["status"] == "cancelled")
        server.release()
        results = client_for(server, tmp_path / "c.sqlite", **BATCH).chat_many(
            requests(["c0", "c1"]), progress=False)
        assert server.created == 2 and server.paid_lines == 2  # the cancelled one ran nothing
    assert [r.text for r in results] == ["answer to c0", "answer to c1"]


async def find_by_input(client, file_id: str, since: float):
    async with client.endpoint.session() as session:
        return await BatchApi(client.endpoint, session).find_by_input(file_id, since)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


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
        [first] = client.chat_many([req], progress=False)  # resubmitted in a follow-up
        assert first.text == "answer to lost" and server.created == 1


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
