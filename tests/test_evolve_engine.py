"""One Code Evol-Instruct round against a real OpenAI-compatible server on 127.0.0.1.

The fault server answers by content, like a (very obliging) model would: evolve prompts get
an evolved question, answer prompts get code, judge prompts get "Not Equal". Markers in a
seed instruction make that row fail one elimination rule: [cut] (evolution cut by
max_tokens), [blank] (evolution of stop words only), [copy] (evolution copies the template),
[refuse] (the answer apologises), [long] (the answer is cut) and [same] (the judge says
Equal); or fail its request: [ctx] (the evolve call gets 400 context_length_exceeded), [null]
(the answer has content null), [fail] (the answer call gets 500s until retries run out).
Everything goes through the real client, cache and stage code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from tests.fake_openai import CONTEXT_LENGTH, NULL_CONTENT, SERVER_ERROR, FaultServer, Reply
from wizardcoder.cli import main
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError
from wizardcoder.evolve import filters
from wizardcoder.evolve.config import EvolveConfig
from wizardcoder.evolve.dry_run import model_identity
from wizardcoder.evolve.engine import choose_method, evolve_round
from wizardcoder.evolve.prompts import METHODS
from wizardcoder.evolve.stats import headline
from wizardcoder.jsonl import write_jsonl
from wizardcoder.llm import LLMClient, LLMConfig, RequestCache, open_client
from wizardcoder.llm.cache import ERROR_CLASSES
from wizardcoder.llm.limits import BudgetExceeded

JUDGE = "Answer with exactly one of: Equal, Not Equal."
EVOLVE = "Rewrite the programming question below"
PRICES = {"price_per_million_prompt_tokens": 2.0, "price_per_million_completion_tokens": 8.0}
FAST = {"backoff_initial_s": 0.01, "backoff_max_s": 0.02, "timeout_s": 5.0, "max_retries": 2}
MARKERS = {"[cut]": "truncated", "[blank]": "empty", "[copy]": "template_copy",
           "[refuse]": "refusal", "[long]": "truncated", "[same]": "judge_equal"}


def responder(body: dict):
    prompt = str(body["messages"][-1]["content"])
    if JUDGE in prompt:
        return Reply("Equal" if "[same]" in prompt else "Not Equal")
    if prompt.startswith(EVOLVE):
        question = prompt.split("Question:\n", 1)[1]
        if "[ctx]" in question:
            return CONTEXT_LENGTH
        if "[cut]" in question:
            return Reply(question + " and also", "length")
        if "[blank]" in question:
            return Reply("Sure, here is the question.")
        if "[copy]" in question:
            return Reply(f"Rewritten prompt: make it harder. {question}")
        return Reply(f"{question} Also reject negative numbers.")
    if "[fail]" in prompt:
        return SERVER_ERROR
    if "[null]" in prompt:
        return NULL_CONTENT
    if "[refuse]" in prompt:
        return Reply("Sorry, I cannot help with that.")
    if "[long]" in prompt:
        return Reply("def solve(x):\n    return", "length")
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:6]
    return Reply(f"def solve(items):\n    return sorted(items)  # {digest}")


def seed_rows(markers: list[str], plain: int) -> list[dict]:
    texts = [f"Write a function that sorts a list of integers {m}." for m in markers]
    texts += [f"Write a function number {i} that counts vowels in a string." for i in
              range(plain)]
    rows = []
    for i, text in enumerate(texts):
        sid = f"seed{i:02d}"
        rows.append({"id": sid, "instruction": text, "input": "", "output": "pass",
                     "lineage": {"seed_id": sid, "source": "test"}})
    return rows


def client_for(server: FaultServer, cache: Path, **llm) -> LLMClient:
    cfg = LLMConfig(provider="openai", base_url=server.url,
                    **{"model": server.model, **FAST, **PRICES, **llm})
    return LLMClient(cfg, server.url, "dummy", f"fault@{server.url}", RequestCache(cache))


def run_round(server, cache, rows, progress=False, llm=None, **evolve):
    client = client_for(server, cache, **{"model": server.model, **(llm or {})})
    config = from_dict(EvolveConfig, evolve, "evolve")
    return evolve_round(rows, config, client, "r1", model="fault-model", progress=progress)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_CACHE_DIR", str(tmp_path / "cache_dir"))
    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")


def test_rules_lineage_cost_and_rerun_without_calls(tmp_path):
    rows = seed_rows(list(MARKERS), plain=4)
    with FaultServer(responder=responder) as server:
        out, rejected, stats = run_round(server, tmp_path / "c.sqlite", rows)
        sent, bodies = server.total, list(server.bodies)
        out2, rejected2, stats2 = run_round(server, tmp_path / "c.sqlite", rows)
        assert server.total == sent  # the second run of the round made no network call
    assert out2 == out and rejected2 == rejected

    methods = {r["id"]: choose_method(EvolveConfig(), 1, r["id"]) for r in rows}
    expected_rule = {r["id"]: next((rule for m, rule in MARKERS.items()
                                    if m in r["instruction"]), None) for r in rows}
    assert stats["dropped_by_rule"] == {"truncated": 2, "empty": 1, "template_copy": 1,
                                        "judge_equal": 1, "refusal": 1, "no_python": 0,
                                        "failed_tests": 0, "request_error": 0}
    assert stats["request_errors"] == {c: 0 for c in ERROR_CLASSES}
    assert stats["kept"] == 4 and stats["dropped"] == 6 and stats["rows_in"] == 10
    for method in METHODS:
        mine = [i for i, m in methods.items() if m == method]
        by = stats["by_method"][method]
        assert by["kept"] == sum(expected_rule[i] is None for i in mine)
        assert by["dropped"] == sum(expected_rule[i] is not None for i in mine)
        assert by["dropped_by_rule"] == {rule: sum(expected_rule[i] == rule for i in mine)
                                         for rule in filters.VERDICTS}

    # One output row per input row, in order: kept evolutions and carried parents.
    assert len(out) == len(rows)
    for parent, row in zip(rows, out, strict=True):
        if expected_rule[parent["id"]]:
            assert row == {**parent, "carried": True, "carried_in_round": 1,
                           "carried_rule": expected_rule[parent["id"]],
                           "carried_method": methods[parent["id"]]}
            continue
        lin = row["lineage"]
        assert row["id"].startswith("r1-") and row["instruction"].endswith(
            "Also reject negative numbers.") and row["output"].startswith("def solve")
        assert lin["seed_id"] == parent["id"] and lin["parent_id"] == parent["id"]
        assert lin["round"] == 1 and lin["method"] == methods[parent["id"]]
        assert lin["model"] == "fault-model"
        assert lin["models"] == {step: {"asked": "fault-model", "served": "fault-model"}
                                 for step in ("evolve", "judge", "answer")}
        assert lin["sampling"]["temperature"] == 0.7 and lin["sampling"]["answer_max_tokens"]
        assert set(lin["usage"]) == {"evolve", "answer", "judge"}
        assert all(u["prompt_tokens"] == 10 and u["completion_tokens"] > 0
                   for u in lin["usage"].values())
        assert lin["verdicts"] == {rule: "skipped" if rule in filters.VERIFY_VERDICTS
                                   else "pass" for rule in filters.VERDICTS}
    by_parent = {r["parent_id"]: r for r in rejected}
    refused = by_parent["seed03"]
    assert refused["failed_rule"] == "refusal" and refused["output"].startswith("Sorry")
    assert refused["lineage"]["verdicts"] == {
        "truncated": "pass", "empty": "pass", "template_copy": "pass", "judge_equal": "pass",
        "refusal": "fail", "no_python": "skipped", "failed_tests": "skipped",
        "request_error": "pass"}
    same = by_parent["seed05"]  # judged Equal before its answer: never answered
    assert same["failed_rule"] == "judge_equal" and same["output"] == ""
    assert set(same["lineage"]["usage"]) == {"evolve", "judge"}
    assert by_parent["seed00"]["lineage"]["verdicts"]["truncated"] == "fail"
    assert set(by_parent["seed00"]["lineage"]["usage"]) == {"evolve"}

    # Tokens and cost: first run all network, second run all cache hits (free now).
    calls = 10 + 7 + 6  # evolve all; judge the 7 survivors; answer the 6 the judge kept
    prompts = [b["messages"][-1]["content"] for b in bodies]
    assert [p for p in prompts if "[same]" in p and JUDGE not in p
            and not p.startswith(EVOLVE)] == []  # the [same] row was never answered
    assert stats["judge_first"]["answer_calls_not_sent"] == 1
    assert stats["judge_first"]["judge_calls_extra"] == 2  # [refuse] and [long]: judged
    assert stats["judge_first"]["prompt_tokens_est"] > 0
    assert stats["judge_first"]["cost_usd_est"] == pytest.approx(
        (stats["judge_first"]["prompt_tokens_est"] * 2.0
         + stats["judge_first"]["completion_tokens_est"] * 8.0) / 1e6)
    assert stats["calls"] == stats["network_calls"] == sent == calls
    assert stats["cache_hits"] == 0 and stats["network"]["requests"] == calls
    completion = stats["network"]["completion_tokens"]
    assert stats["network"]["prompt_tokens"] == 10 * calls
    assert stats["cost_usd"] == pytest.approx((10 * calls * 2.0 + completion * 8.0) / 1e6)
    assert sum(s["cost_usd"] for s in stats["by_step"].values()) == pytest.approx(
        stats["cost_usd"])
    assert stats["by_step"]["evolve"]["requests"] == 10
    assert stats2["network_calls"] == 0 and stats2["cost_usd"] == 0.0
    assert stats2["cache_hits"] == calls and stats2["cache"]["value_usd"] == pytest.approx(
        stats["cost_usd"])
    assert stats2["prompt_tokens"] == stats["prompt_tokens"]
    # The headline DVC compares (metrics/evolve/r1.json) is the same whether this run paid
    # for the calls or the cache answered them: calls the round needed, their tokens and cost.
    assert headline(stats, "r1") == headline(stats2, "r1") == {
        "r1_kept": 4, "r1_calls": calls,
        "r1_tokens": stats["prompt_tokens"] + stats["completion_tokens"],
        "r1_cost_usd": pytest.approx(stats["cost_usd"])}


def test_switched_off_rules_are_skipped_and_send_nothing(tmp_path):
    rows = seed_rows(["[copy]", "[refuse]", "[same]", "[cut]"], plain=1)
    with FaultServer(responder=responder) as server:
        out, rejected, stats = run_round(server, tmp_path / "c.sqlite", rows,
                                         eliminate=["truncated"])
        judged = [b for b in server.bodies if JUDGE in b["messages"][-1]["content"]]
    assert judged == []  # judge_equal off: the judge step sends nothing
    assert [r.get("carried_rule") for r in out] == [None, None, None, "truncated", None]
    assert stats["dropped_by_rule"]["truncated"] == 1 and stats["dropped"] == 1
    for row in out[:3]:
        verdicts = row["lineage"]["verdicts"]
        assert verdicts["truncated"] == "pass"
        assert all(verdicts[r] == "skipped" for r in filters.RULES if r != "truncated")
        assert "judge" not in row["lineage"]["usage"]


def test_method_choice_is_seeded_and_reproducible():
    ids = [f"row{i}" for i in range(40)]
    first = [choose_method(EvolveConfig(seed=0), 1, i) for i in ids]
    assert first == [choose_method(EvolveConfig(seed=0), 1, i) for i in ids]
    assert first != [choose_method(EvolveConfig(seed=1), 1, i) for i in ids]
    assert first != [choose_method(EvolveConfig(seed=0), 2, i) for i in ids]  # per round
    assert len(set(first)) >= 3
    only = EvolveConfig(methods={"add_constraints": 0.0, "erroneous_code": 1.0})
    assert {choose_method(only, 1, i) for i in ids} == {"erroneous_code"}


def test_budget_stops_below_the_cap_and_resumes_without_repeats(tmp_path):
    rows = seed_rows([], plain=8)
    small = {"evolve_max_tokens": 24, "answer_max_tokens": 16}
    llm = {"price_per_million_prompt_tokens": 0.0, "max_in_flight": 1}
    with FaultServer(responder=responder) as reference_server:
        reference, _, ref_stats = run_round(reference_server, tmp_path / "ref.sqlite", rows,
                                            llm=llm, **small)
    total = ref_stats["cost_usd"]
    cap = round(total * 0.8, 8)
    cache = tmp_path / "c.sqlite"
    with FaultServer(responder=responder) as server:
        with pytest.raises(BudgetExceeded) as info:
            run_round(server, cache, rows, llm=llm, budget_usd=cap, **small)
        exc, answered = info.value, len(server.answered)
        assert 0 < answered < ref_stats["calls"] and exc.unanswered > 0
        assert exc.spent_usd <= cap and exc.cap_usd == cap and exc.exit_code == 2
        message = str(exc)
        assert "evolve.budget_usd" in message and "rerun" in message and "$" in message
        # Same cap again: cached answers count at their price, so nothing new is sent.
        with pytest.raises(BudgetExceeded):
            run_round(server, cache, rows, llm=llm, budget_usd=cap, **small)
        assert len(server.answered) == len(server.bodies) == answered
        out, _, stats = run_round(server, cache, rows, llm={**llm, "max_in_flight": 4},
                                  budget_usd=total * 2, **small)
        sent = [json.dumps(b, sort_keys=True) for b in server.bodies]
    assert len(sent) == len(set(sent)) == ref_stats["calls"]  # no request sent twice
    assert stats["cache_hits"] == answered and stats["network_calls"] == len(sent) - answered
    assert out == reference  # resumed == undisturbed


def write_params(path: Path, url: str, **evolve) -> Path:
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["rounds"] = {"r1": "data/seed.jsonl"}
    params["llm"] = {"provider": "openai", "base_url": url, "model": "fault-model",
                     "api_key_env": "WC_TEST_DUMMY_KEY", **FAST, **PRICES}
    params["evolve"].update(evolve)
    path.write_text(yaml.safe_dump(params))
    return path


def evolve_cli(tmp_path: Path, params: Path, round_key: str = "r1") -> tuple[int, dict]:
    outs = {name: tmp_path / f"{name}.json" for name in ("out", "rejected", "metrics")}
    code = main(["evolve", "--params", str(params), "--round", round_key,
                 "--input", str(tmp_path / "seed.jsonl"),
                 *[a for n, p in outs.items() for a in (f"--{n}", str(p))]])
    return code, outs


def test_too_many_failed_rows_exit_2_with_counts_and_write_nothing(tmp_path, capsys):
    rows = seed_rows(["[null]", "[ctx]", "[ctx] too"], plain=7)
    write_jsonl(tmp_path / "seed.jsonl", rows)
    with FaultServer(responder=responder) as server:
        # 3 of 10 rows fail; 0.2 allows 2 (no minimum count).
        params = write_params(tmp_path / "params.yaml", server.url, max_failed_fraction=0.2,
                              max_failed_rows_min=0)
        code, outs = evolve_cli(tmp_path, params)
    err = capsys.readouterr().err
    assert code == 2
    assert "3 of 10 rows failed their LLM request permanently (30.0%)" in err
    assert "evolve.max_failed_fraction=0.2 (2 row(s) allowed" in err
    assert "context_length 2" in err and "empty_content 1" in err
    assert "evolve 2" in err and "answer 1" in err
    for row in ("seed00", "seed01", "seed02"):  # every failed row, named
        assert f"'r1/{row}/" in err
    assert "maximum context length" in err
    assert not any(p.exists() for p in outs.values())
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind either


def healed(body: dict):
    """The server once its outage is over: [fail] rows are answered like the others."""
    prompt = str(body["messages"][-1]["content"])
    if "[fail]" in prompt and JUDGE not in prompt and not prompt.startswith(EVOLVE):
        return Reply("def solve(items):\n    return sorted(items)  # healed")
    return responder(body)


def test_a_transient_failure_stops_the_round_and_a_rerun_keeps_its_row(tmp_path, capsys):
    """A request failing transiently through every retry must not drop its row in a run that
    exits 0 (DVC would never rerun it): the stage stops, writes nothing, and the rerun sends
    only that request and keeps the row."""
    rows = seed_rows(["[fail]"], plain=3)
    write_jsonl(tmp_path / "seed.jsonl", rows)
    with FaultServer(responder=responder) as server:
        params = write_params(tmp_path / "params.yaml", server.url)
        code, outs = evolve_cli(tmp_path, params)
        err = capsys.readouterr().err
        first = len(server.bodies)
        assert code == 2
        assert "1 request(s) still failed transiently after every retry" in err
        assert "r1/seed00/answer" in err and "HTTP 500" in err
        assert not any(p.exists() for p in outs.values())
        server.responder = healed
        code, outs = evolve_cli(tmp_path, params)
        rerun = server.bodies[first:]
    assert code == 0, capsys.readouterr().err
    assert len(rerun) == 1 and "[fail]" in json.dumps(rerun[0])  # only the failed request
    out = [json.loads(x) for x in outs["out"].read_text().splitlines()]
    assert not any(r.get("carried") for r in out) and "healed" in out[0]["output"]
    metrics = json.loads(outs["metrics"].read_text())
    assert metrics["failed_rows"] == [] and metrics["request_errors"]["retries_exhausted"] == 0


def test_a_failed_request_eliminates_its_row_and_the_round_finishes(tmp_path, capsys):
    rows = seed_rows(["[ctx]", "[null]"], plain=5)
    write_jsonl(tmp_path / "seed.jsonl", rows)
    with FaultServer(responder=responder) as server:
        params = write_params(tmp_path / "params.yaml", server.url, max_failed_fraction=0.5)
        code, outs = evolve_cli(tmp_path, params)
        first = [json.dumps(b, sort_keys=True) for b in server.bodies]
        assert code == 0, capsys.readouterr().err
        code, outs = evolve_cli(tmp_path, params)  # rerun: permanent failures are cached
        rerun = [json.dumps(b, sort_keys=True) for b in server.bodies[len(first):]]
        capsys.readouterr()
        assert main(["evolve", "--params", str(params), "--round", "r1", "--dry-run",
                     "--input", str(tmp_path / "seed.jsonl")]) == 0
        dry = capsys.readouterr().out
        assert len(server.bodies) == len(first) + len(rerun)  # the dry run sent nothing
    assert code == 0
    # Evolve: 7 cached (1 a failure); judge: 6 cached; answer: 6 cached.
    assert "7 needed: 7 cached, 0 to send" in dry
    assert "request errors     2 cached" in dry  # [ctx] and [null]: replayed, not resent
    assert len(first) == 7 + 6 + 6  # 7 evolve, 6 judge, 6 answer
    assert rerun == []
    out = [json.loads(x) for x in outs["out"].read_text().splitlines()]
    rejected = [json.loads(x) for x in outs["rejected"].read_text().splitlines()]
    metrics = json.loads(outs["metrics"].read_text())
    assert [r.get("carried_error") for r in out[:2]] == ["context_length", "empty_content"]
    for parent, row in zip(rows[:2], out[:2], strict=True):
        assert row["carried"] and row["carried_rule"] == "request_error"
        assert {k: v for k, v in row.items() if not k.startswith("carried")} == parent
    assert all(not r.get("carried") for r in out[2:])
    ctx = rejected[0]
    assert ctx["failed_rule"] == "request_error" and ctx["parent_id"] == "seed00"
    assert ctx["error"]["class"] == "context_length" and ctx["error"]["step"] == "evolve"
    assert "maximum context length" in ctx["error"]["message"]
    assert ctx["lineage"]["verdicts"]["request_error"] == "fail"
    assert ctx["lineage"]["seed_id"] == "seed00" and set(ctx["lineage"]["usage"]) == {"evolve"}
    assert rejected[1]["error"]["step"] == "answer"
    assert metrics["dropped_by_rule"]["request_error"] == 2 and metrics["kept"] == 5
    assert metrics["request_errors"] == {"context_length": 1, "content_filter": 0,
                                         "bad_request": 0, "retries_exhausted": 0,
                                         "empty_content": 1}
    assert metrics["request_errors_by_step"] == {"evolve": 1, "judge": 0, "answer": 1}
    assert metrics["failed_fraction"] == round(2 / 7, 6)
    assert metrics["failed_rows"] == [
        {"id": "seed00", "step": "evolve", "class": "context_length"},
        {"id": "seed01", "step": "answer", "class": "empty_content"}]
    by_method = {m: v["request_errors"] for m, v in metrics["by_method"].items()}
    assert sum(sum(v.values()) for v in by_method.values()) == 2


def test_the_failure_budget_scales_with_the_round():
    config = EvolveConfig()  # the defaults: 2%, at least 5 rows
    assert config.max_failed_rows(60) == 5  # two bad rows of 60 do not fail the round
    assert config.max_failed_rows(20_000) == 400  # a broken prompt fails far more
    assert config.max_failed_rows(3) == 2  # a round whose every row failed always stops
    assert EvolveConfig(max_failed_fraction=1.0).max_failed_rows(3) == 3
    assert EvolveConfig(max_failed_rows_min=0).max_failed_rows(60) == 1
    with pytest.raises(ConfigError, match="evolve.max_failed_rows_min"):
        EvolveConfig(max_failed_rows_min=-1)


def test_step_models_lineage_records_the_served_model(tmp_path):
    rows = seed_rows(["[same]"], plain=2)
    served = {"fault-model": "fault-model-2026-01-01", "judge-mini": "judge-mini-0613"}
    with FaultServer(responder=responder, served_models=served) as server:
        llm = {"step_models": {"judge": "judge-mini"}}
        out, rejected, stats = run_round(server, tmp_path / "c.sqlite", rows, llm=llm)
        asked = {(b["model"], "judge" if JUDGE in b["messages"][-1]["content"] else "other")
                 for b in server.bodies}
    assert asked == {("judge-mini", "judge"), ("fault-model", "other")}
    lin = out[1]["lineage"]
    assert lin["models"] == {
        "evolve": {"asked": "fault-model", "served": "fault-model-2026-01-01"},
        "judge": {"asked": "judge-mini", "served": "judge-mini-0613"},
        "answer": {"asked": "fault-model", "served": "fault-model-2026-01-01"}}
    assert rejected[0]["lineage"]["models"]["judge"]["served"] == "judge-mini-0613"
    with pytest.raises(ConfigError, match="llm.step_models.critic"):
        from_dict(LLMConfig, {"provider": "openai", "model": "m",
                              "step_models": {"critic": "x"}}, "llm")
    with pytest.raises(ConfigError, match="llm.step_models: expected .*embedded"):
        from_dict(LLMConfig, {"step_models": {"judge": "gpt-4o-mini"}}, "llm")


def test_reasoning_model_round_with_provider_params(tmp_path):
    rows = seed_rows([], plain=3)
    with FaultServer(responder=responder, model="o-model",
                     reasoning_models=("o-model",)) as server:
        llm = {"token_limit_param": "max_completion_tokens", "fixed_temperature": True}
        out, _, stats = run_round(server, tmp_path / "c.sqlite", rows, llm=llm,
                                  max_failed_fraction=0.0)
        bodies = list(server.bodies)
    assert stats["kept"] == 3 and stats["request_errors"]["bad_request"] == 0
    assert all("max_tokens" not in b and "temperature" not in b for b in bodies)
    assert out[0]["lineage"]["sampling"]["temperature"] is None


def test_dry_run_sends_nothing_and_counts_the_cache(tmp_path, capsys, monkeypatch):
    rows = seed_rows(["[refuse]"], plain=3)
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data" / "seed.jsonl", rows)
    with FaultServer(responder=responder) as server:
        params = write_params(tmp_path / "params.yaml", server.url, budget_usd=1.0)
        argv = ["evolve", "--params", str(params), "--round", "r1"]
        assert main([*argv, "--dry-run"]) == 0
        cold = capsys.readouterr().out
        assert server.total == 0 and not (tmp_path / "data" / "evolved").exists()
        assert main(argv) == 0
        sent = server.total
        capsys.readouterr()
        assert main([*argv, "--dry-run"]) == 0
        warm = capsys.readouterr().out
        assert main(["evolve", "--params", str(params), "--round", "r2", "--dry-run"]) == 0
        r2 = capsys.readouterr().out
        (tmp_path / "data" / "evolved" / "r1.jsonl").unlink()
        assert main(["evolve", "--params", str(params), "--round", "r3", "--dry-run"]) == 0
        r3 = capsys.readouterr().out
        assert server.total == sent == 4 + 4 + 4
        cfg = from_dict(LLMConfig, yaml.safe_load(params.read_text())["llm"], "llm")
        with open_client(cfg, cache_path=tmp_path / "x.sqlite") as client:
            assert model_identity(cfg) == client.model_identity  # same cache keys
    assert "data/seed.jsonl: 4 rows" in cold
    assert "4 needed: 0 cached, 4 to send" in cold and "at most 8: 0 cached, at most 8" in cold
    assert "judge+answer calls" in cold
    assert "the round fits" in cold and "$" in cold
    assert "4 needed: 4 cached, 0 to send" in warm
    assert "at most 8: 8 cached, at most 0 to send" in warm  # judged, then answered
    assert "$0.0000 .. $0.0000 to send now" in warm
    assert "4 needed: 0 cached, 4 to send" in r2 and "r1.jsonl: 4 rows" in r2
    assert "data/evolved/r2.jsonl does not exist yet" in r3
    assert "upper bounds from data/seed.jsonl (4 rows" in r3


def test_budget_and_price_params_are_validated():
    with pytest.raises(ConfigError, match="evolve.budget_usd"):
        from_dict(EvolveConfig, {"budget_usd": -1}, "evolve")
    with pytest.raises(ConfigError, match="llm.price_per_million_prompt_tokens"):
        from_dict(LLMConfig, {"price_per_million_prompt_tokens": -0.5}, "llm")
    cfg = from_dict(LLMConfig, {"provider": "openai", "model": "m",
                                "price_per_million_completion_tokens": 10}, "llm")
    assert cfg.prices.cost(1000, 1000) == pytest.approx(0.01)
    assert from_dict(EvolveConfig, {"budget_usd": 5}, "evolve").budget_usd == 5.0


def test_dry_run_with_the_embedded_provider_starts_no_server(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "data" / "seed.jsonl", seed_rows([], plain=2))
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["rounds"] = {"r1": "data/seed.jsonl"}
    assert params["llm"]["provider"] == "embedded"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["evolve", "--params", "params.yaml", "--round", "r1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "model identity     gguf:SmolLM2-135M-Instruct" in out
    assert "2 needed: 0 cached, 2 to send" in out and "unpriced" in out
    # EmbeddedServer.start() always logs its command line here before anything else.
    assert not (tmp_path / "cache_dir" / "embedded_server.log").exists()
    assert not (tmp_path / "cache_dir" / "llm_requests.sqlite").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache_dir", "data", "params.yaml"]
