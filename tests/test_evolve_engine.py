"""One Code Evol-Instruct round against a real OpenAI-compatible server on 127.0.0.1.

The fault server answers by content, like a (very obliging) model would: evolve prompts get
an evolved question, answer prompts get code, judge prompts get "Not Equal". Markers in a
seed instruction make that row fail one elimination rule: [cut] (evolution cut by
max_tokens), [blank] (evolution of stop words only), [copy] (evolution copies the template),
[refuse] (the answer apologises), [long] (the answer is cut) and [same] (the judge says
Equal). Everything goes through the real client, cache and stage code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from tests.fault_server import SERVER_ERROR, FaultServer, Reply
from wizardcoder.cli import main
from wizardcoder.config import from_dict
from wizardcoder.errors import ConfigError
from wizardcoder.evolve import filters
from wizardcoder.evolve.engine import EvolveConfig, choose_method, evolve_round
from wizardcoder.evolve.prompts import METHODS
from wizardcoder.jsonl import write_jsonl
from wizardcoder.llm import LLMClient, LLMConfig, RequestCache, open_client
from wizardcoder.llm.limits import BudgetExceeded
from wizardcoder.pipeline.evolve import model_identity

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
        if "[cut]" in question:
            return Reply(question + " and also", "length")
        if "[blank]" in question:
            return Reply("Sure, here is the question.")
        if "[copy]" in question:
            return Reply(f"Rewritten prompt: make it harder. {question}")
        return Reply(f"{question} Also reject negative numbers.")
    if "[fail]" in prompt:
        return SERVER_ERROR
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
    cfg = LLMConfig(provider="openai", base_url=server.url, model=server.model,
                    **{**FAST, **PRICES, **llm})
    return LLMClient(cfg, server.url, "dummy", f"fault@{server.url}", RequestCache(cache))


def run_round(server, cache, rows, progress=False, llm=None, **evolve):
    client = client_for(server, cache, **(llm or {}))
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
        sent = server.total
        out2, rejected2, stats2 = run_round(server, tmp_path / "c.sqlite", rows)
        assert server.total == sent  # the second run of the round made no network call
    assert out2 == out and rejected2 == rejected

    methods = {r["id"]: choose_method(EvolveConfig(), 1, r["id"]) for r in rows}
    expected_rule = {r["id"]: next((rule for m, rule in MARKERS.items()
                                    if m in r["instruction"]), None) for r in rows}
    assert stats["dropped_by_rule"] == {"truncated": 2, "empty": 1, "template_copy": 1,
                                        "refusal": 1, "judge_equal": 1}
    assert stats["kept"] == 4 and stats["dropped"] == 6 and stats["rows_in"] == 10
    for method in METHODS:
        mine = [i for i, m in methods.items() if m == method]
        by = stats["by_method"][method]
        assert by["kept"] == sum(expected_rule[i] is None for i in mine)
        assert by["dropped"] == sum(expected_rule[i] is not None for i in mine)
        assert by["dropped_by_rule"] == {rule: sum(expected_rule[i] == rule for i in mine)
                                         for rule in filters.RULES}

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
        assert lin["sampling"]["temperature"] == 0.7 and lin["sampling"]["answer_max_tokens"]
        assert set(lin["usage"]) == {"evolve", "answer", "judge"}
        assert all(u["prompt_tokens"] == 10 and u["completion_tokens"] > 0
                   for u in lin["usage"].values())
        assert lin["verdicts"] == {rule: "pass" for rule in filters.RULES}
    by_parent = {r["parent_id"]: r for r in rejected}
    refused = by_parent["seed03"]
    assert refused["failed_rule"] == "refusal" and refused["output"].startswith("Sorry")
    assert refused["lineage"]["verdicts"] == {
        "truncated": "pass", "empty": "pass", "template_copy": "pass", "refusal": "fail",
        "judge_equal": "skipped"}
    assert by_parent["seed00"]["lineage"]["verdicts"]["truncated"] == "fail"
    assert set(by_parent["seed00"]["lineage"]["usage"]) == {"evolve"}

    # Tokens and cost: first run all network, second run all cache hits (free now).
    calls = 10 + 7 + 5  # evolve all; answer 7 survivors; judge 5 survivors of the answers
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


def test_failed_request_exits_nonzero_naming_it_and_writes_nothing(tmp_path, capsys):
    rows = seed_rows(["[fail]"], plain=2)
    write_jsonl(tmp_path / "seed.jsonl", rows)
    outs = {name: tmp_path / f"{name}.json" for name in ("out", "rejected", "metrics")}
    with FaultServer(responder=responder) as server:
        params = write_params(tmp_path / "params.yaml", server.url)
        code = main(["evolve", "--params", str(params), "--round", "r1",
                     "--input", str(tmp_path / "seed.jsonl"),
                     *[a for n, p in outs.items() for a in (f"--{n}", str(p))]])
    err = capsys.readouterr().err
    assert code == 2
    assert "'r1/seed00/answer'" in err and "3 attempt(s)" in err and "HTTP 500" in err
    assert not any(p.exists() for p in outs.values())
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind either


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
        assert server.total == sent == 4 + 4 + 3
        cfg = from_dict(LLMConfig, yaml.safe_load(params.read_text())["llm"], "llm")
        with open_client(cfg, cache_path=tmp_path / "x.sqlite") as client:
            assert model_identity(cfg) == client.model_identity  # same cache keys
    assert "data/seed.jsonl: 4 rows" in cold
    assert "4 needed: 0 cached, 4 to send" in cold and "at most 8: 0 cached, at most 8" in cold
    assert "the round fits" in cold and "$" in cold
    assert "4 needed: 4 cached, 0 to send" in warm
    assert "at most 7: 7 cached, at most 0 to send" in warm  # refusal: no judge call
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
