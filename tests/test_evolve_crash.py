"""SIGKILL the real evolve stage mid-round, rerun it, and compare with an undisturbed run.

The stage runs as DVC runs it (``python -m stages.evolve`` in a subprocess) against the
scripted server on 127.0.0.1 (provider openai + base_url), which answers slowly so the kill
lands after some answers were cached and before the round finished. The server's request
log proves that the rerun repeats no call that had finished, and the resumed output must be
byte-identical to that of a run that was never interrupted (its own directory and cache).
One row's evolve call gets 400 context_length_exceeded: that row is eliminated (verdict
request_error) in both runs, and its cached failure is not sent again by the rerun.
The dummy API key must reach the server and nothing else.
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

from tests.fake_openai import FaultServer
from tests.kill_resume import finish, kill_when
from tests.test_evolve_engine import FAST, PRICES, responder, seed_rows
from wizardcoder.jsonl import write_jsonl

REPO = Path(__file__).resolve().parents[1]
KEY_ENV = "WC_CRASH_TEST_KEY"
KEY = "sk-crash-" + "D0ntL3akM3" * 3
MARKERS = ["[cut]", "[refuse]", "[same]", "[copy]", "[ctx]"]
CALLS = 11 + 8 + 7  # evolve all 11; judge the 8 left; answer the 7 the judge kept


def make_workdir(root: Path, url: str) -> Path:
    root.mkdir(parents=True)
    write_jsonl(root / "data" / "seed.jsonl", seed_rows(MARKERS, plain=6))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["rounds"] = {"r1": "data/seed.jsonl"}
    params["evolve"]["max_failed_fraction"] = 0.1  # 1 of 11 rows may fail its request
    params["llm"] = {"provider": "openai", "base_url": url, "model": "fault-model",
                     "api_key_env": KEY_ENV, "max_in_flight": 2, **FAST, **PRICES}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def stage(workdir: Path, wrap: list[str] | None = None) -> subprocess.Popen:
    """The evolve stage as DVC runs it; ``wrap``: a command line to run it under."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "WIZARDCODER_CACHE_DIR": str(workdir / "cache"),
           "WIZARDCODER_MLFLOW": "0", KEY_ENV: KEY}
    cmd = [sys.executable, "-m", "stages.evolve", "--params", "params.yaml", "--round", "r1",
           "--input", "data/seed.jsonl", "--out", "data/evolved/r1.jsonl",
           "--rejected", "data/rejected/r1.jsonl", "--metrics", "metrics/evolve/r1.json",
           "--run-facts", "metrics/run_facts/evolve/r1.json"]
    return subprocess.Popen([*(wrap or []), *cmd], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cached_requests(workdir: Path) -> set[str]:
    path = workdir / "cache" / "llm_requests.sqlite"
    if not path.exists():
        return set()
    with sqlite3.connect(path) as db:
        try:
            rows = db.execute("SELECT request FROM responses").fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return set()
    return {canonical(json.loads(r[0])) for r in rows}


def canonical(body: dict) -> str:
    """A request as the cache stores it: messages + sampling (no model, no transport)."""
    return json.dumps({k: v for k, v in body.items() if k != "model"}, sort_keys=True)


def test_sigkill_mid_round_then_rerun_loses_and_repeats_nothing(tmp_path):
    with FaultServer(responder=responder, latency=0.1) as server:
        crashed = make_workdir(tmp_path / "crashed", server.url)
        # 11 evolve calls, then judges and answers: kill once a few are in the cache.
        logs = kill_when(stage(crashed), lambda: len(cached_requests(crashed)) >= 14,
                         timeout=60, what="the stage never got that far")
        before = cached_requests(crashed)
        first_run = [canonical(b) for b in server.bodies]
        assert not (crashed / "data" / "evolved" / "r1.jsonl").exists()
        assert 14 <= len(before) < CALLS
        ctx = [b for b in before if "[ctx]" in b]
        assert len(ctx) == 1  # the failed evolution was cached as such

        logs += finish(stage(crashed))
        rerun = [canonical(b) for b in server.bodies[len(first_run):]]
        assert not before & set(rerun)  # no finished (cached) call was sent again
        # At most the requests in flight at the kill (max_in_flight) were sent twice.
        assert len(set(first_run) & set(rerun)) <= 2
        assert len(before) + len(rerun) == CALLS
        assert not [b for b in rerun if "[ctx]" in b]  # its cached 400 was not paid again

        clean = make_workdir(tmp_path / "clean", server.url)
        sent = len(server.bodies)
        logs += finish(stage(clean))
        assert len(server.bodies) - sent == CALLS
        auth = set(server.auth_headers)

    assert auth == {f"Bearer {KEY}"}  # the key was used, on the wire only
    for name in ("data/evolved/r1.jsonl", "data/rejected/r1.jsonl"):
        resumed, undisturbed = (crashed / name).read_text(), (clean / name).read_text()
        assert resumed == undisturbed
        assert [json.loads(x) for x in resumed.splitlines()] == \
            [json.loads(x) for x in undisturbed.splitlines()]
    metrics = json.loads((crashed / "metrics/evolve/r1.json").read_text())
    clean_metrics = json.loads((clean / "metrics/evolve/r1.json").read_text())
    # What the cache saved is a run fact; the metrics file is the same either way.
    assert metrics == clean_metrics
    facts = json.loads((crashed / "metrics/run_facts/evolve/r1.json").read_text())
    clean_facts = json.loads((clean / "metrics/run_facts/evolve/r1.json").read_text())
    assert facts["cache_hits"] == len(before)
    assert facts["network_calls"] == CALLS - len(before)
    assert clean_facts["cache_hits"] == 0 and clean_facts["cost_usd"] > 0
    assert facts["cost_usd"] < clean_facts["cost_usd"]
    assert metrics["kept"] == clean_metrics["kept"] == 6
    assert metrics["request_errors"]["context_length"] == 1
    assert clean_metrics["dropped_by_rule"] == metrics["dropped_by_rule"]
    rejected = [json.loads(x) for x in (crashed / "data/rejected/r1.jsonl").read_text()
                .splitlines()]
    assert [r["error"]["class"] for r in rejected if "error" in r] == ["context_length"]
    texts = [logs] + [p.read_text(errors="replace") for d in (crashed, clean)
                      for p in d.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl",
                                                                              ".yaml", ".log")]
    texts += [p.read_bytes().decode("utf-8", "replace") for d in (crashed, clean)
              for p in (d / "cache").glob("*")]
    for text in texts:
        assert KEY not in text and KEY[:12] not in text


def _can_mount_tmpfs(probe: Path) -> bool:
    probe.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(["unshare", "-m", "sh", "-c",
                               f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_a_full_disk_stops_the_stage_at_once_and_writes_nothing(tmp_path):
    """The request cache lives on a tiny tmpfs (a private mount namespace) that fills up
    mid-round: the stage must stop sending at once -- not keep buying answers it can no
    longer store -- fail with a clear message and write no output."""
    if not _can_mount_tmpfs(tmp_path / "probe"):
        pytest.skip("needs `unshare -m` and a tmpfs mount (root in a private mount namespace)")
    with FaultServer(responder=responder, latency=0.02) as server:
        workdir = make_workdir(tmp_path / "full", server.url)
        write_jsonl(workdir / "data" / "seed.jsonl", seed_rows([], plain=60))
        cache = workdir / "cache"
        cache.mkdir()
        mount = f"mount -t tmpfs -o size=96k tmpfs {cache} && exec \"$@\""
        proc = stage(workdir, ["unshare", "-m", "sh", "-c", mount, "sh"])
        out, err = proc.communicate(timeout=120)
        sent = server.total
    assert proc.returncode == 2, err[-3000:]
    assert "cannot write the LLM request cache" in err and "full" in err, err[-3000:]
    assert "sending stopped at once" in err and "request(s) not sent" in err
    assert "Traceback" not in err
    # 180 requests in the round (60 evolve, judge, answer); it stopped within the first
    # step, after at most the requests in flight (max_in_flight 2) beyond the first failure.
    assert sent < 60, sent
    assert not (workdir / "data" / "evolved").exists()
    assert not (workdir / "data" / "rejected").exists() and not (workdir / "metrics").exists()
