"""The real stage graph, end to end, with DVC itself, on the smallest settings.

A copy of this repository (tracked and new files) becomes a fresh git + DVC repo in a
temp dir; params are shrunk (2 seeds, 1 round, 1 training step, 2 HumanEval tasks). The
cold `dvc repro` runs inside a network namespace with only loopback up when this machine
allows it (root), which proves the default path opens no outside connection.

That reproduced workspace (``pipeline``) is built once per session and only read; a test
that changes a workspace (reruns stages, commits, adds a remote) works on its own copy
(``workspace``), so every test sees the state the cold repro left, whatever ran before it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspace import copy_workspace, run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def second_repro(pipeline, tmp_path_factory):
    """A copy of the reproduced workspace after a second `dvc repro`: (repo, env, its log)."""
    repo, env, dvc, _ = pipeline
    copy, copy_env = copy_workspace(repo, env, tmp_path_factory.mktemp("e2e-second") / "repo")
    return copy, copy_env, run(f"{dvc} repro", copy, copy_env)


def test_cold_repro_writes_real_metrics(pipeline):
    repo, _, _, log = pipeline
    for stage in ("seed", "evolve@r1", "merge", "train", "generate", "score", "generate_dev",
                  "score_dev", "log"):
        assert f"Running stage '{stage}'" in log
    # The headline (metrics/, what dvc exp show compares) and the details beside it.
    score = json.loads((repo / "metrics/details/score.json").read_text())["humaneval"]
    assert score["benchmark"] == "humaneval" and score["tasks"] == 2
    assert 0.0 <= score["pass@1"] <= 1.0 and "pass@10" not in score
    headline = json.loads((repo / "metrics/score.json").read_text())["humaneval"]
    assert headline["pass@1"] == score["pass@1"]
    assert headline["pass@1_low"] <= headline["pass@1"] <= headline["pass@1_high"]
    results = [json.loads(line) for line in (repo / "data/eval/results/humaneval.jsonl").open()]
    assert len(results) == 2 and all(r["kind"] for r in results)
    evolve = json.loads((repo / "metrics/details/evolve/r1.json").read_text())
    assert evolve["rows_in"] == 2 and evolve["calls"] >= 2
    assert json.loads((repo / "metrics/evolve/r1.json").read_text())["r1_calls"] == \
        evolve["calls"]
    # the real default base model, dequantized from the bundled GGUF, trained one step
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["base_model"] == \
        "embedded"
    train = json.loads((repo / "metrics/details/train.json").read_text())
    assert train["train_loss"] > 0 and math.isfinite(train["train_loss"])
    assert train["global_step"] == 1
    assert (repo / "models/sft/config.json").exists()
    assert "SmolLM2" in (repo / "models/sft/README.md").read_text()


def test_second_repro_runs_only_the_log_stage(second_repro):
    log = second_repro[2]
    assert log.count("Running stage") == 1 and "Running stage 'log'" in log
    for stage in ("train", "generate", "score"):
        assert f"Stage '{stage}' didn't change" in log


RUN_FACTS = "metrics/run_facts/"  # run times, speeds, cache hits, costs: cache: false outs


def _lock_outputs(repo: Path) -> dict:
    """Every output's md5 in dvc.lock (metrics and plots included), run facts aside."""
    from wizardcoder.log.stage import lock_outputs

    return {path: digest for path, digest in lock_outputs(repo / "dvc.lock").items()
            if not path.startswith(RUN_FACTS)}


def test_identical_inputs_give_identical_outputs(workspace):
    """Every stage forced to rerun with the same inputs and a fresh project cache (no LLM
    answer, resume file or checkpoint to replay) writes every output, metrics included, byte
    for byte as before: dvc.lock is unchanged but for the run facts, and DVC sees nothing to
    rerun downstream."""
    repo, env, dvc = workspace
    before = _lock_outputs(repo)
    assert {"models/sft", "data/eval/samples", "data/eval/results",
            "data/evolved/r1.jsonl", "metrics/train.json", "metrics/evolve/r1.json",
            "data/dev/results.jsonl"} <= set(before)
    from wizardcoder.log.stage import lock_outputs

    assert any(p.startswith(RUN_FACTS) for p in lock_outputs(repo / "dvc.lock"))
    shutil.rmtree(repo / ".cache" / "wizardcoder")
    log = run(f"{dvc} repro -f", repo, env)
    for stage in ("seed", "evolve@r1", "merge", "train", "generate", "score",
                  "generate_dev", "score_dev"):
        assert f"Running stage '{stage}'" in log
    assert "resuming" not in log
    after = _lock_outputs(repo)
    changed = sorted(p for p in before if after.get(p) != before[p])
    assert not changed, changed
    status = json.loads(run(f"{dvc} status --json", repo, env).strip().splitlines()[-1])
    assert set(status) <= {"log"}, status  # log: always changed


def test_edits_never_hit_a_stale_cache(workspace):
    """An edited prompt text, edited generation code and another llm.embedded_n_ctx each
    rerun their stage without one answer from a cache filled before the edit; the prompt
    edit changes the samples."""
    repo, env, dvc = workspace
    samples = repo / "data/eval/samples/humaneval.jsonl"
    old = samples.read_bytes()
    template = repo / "wizardcoder/prompt_template.py"
    assert '"Create a {language} script for this problem:' in template.read_text()
    template.write_text(template.read_text().replace(
        '"Create a {language} script for this problem:', '"Write {language} code for this task:'))
    log = run(f"{dvc} repro -s generate", repo, env)
    assert "Running stage 'generate'" in log and "resuming" not in log
    rows = [json.loads(line) for line in samples.read_text().splitlines()[1:]]
    assert rows and all("Write Python code for this task:" in r["prompt_text"] for r in rows)
    assert samples.read_bytes() != old

    code = repo / "wizardcoder/generate/hf.py"
    code.write_text(code.read_text() + "\n# edited\n")
    log = run(f"{dvc} repro -s generate", repo, env)
    assert "Running stage 'generate'" in log and "resuming" not in log

    # Another context size is another server: every request is sent again, none replayed
    # (at 256 tokens these tiny prompts and answers still fit, so the answers may be the
    # same ones; at 128 llama-cpp-python answers HTTP 500, a transient failure that stops
    # the round; tests/test_cache_keys.py checks the key itself).
    params = yaml.safe_load((repo / "params.yaml").read_text())
    calls = json.loads((repo / "metrics/details/evolve/r1.json").read_text())["calls"]
    params["llm"]["embedded_n_ctx"] = 256
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = run(f"{dvc} repro -s evolve@r1", repo, env)
    assert "Running stage 'evolve@r1'" in log
    facts = json.loads((repo / "metrics/run_facts/evolve/r1.json").read_text())
    assert facts["cache_hits"] == 0 and facts["network_calls"] == calls > 0, facts


def _parents(repo, env) -> list[dict]:
    code = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{repo}/mlflow.db')\n"
        "runs = mlflow.search_runs(experiment_names=['wizardcoder'], output_format='list',\n"
        "    filter_string=\"tags.pipeline_role = 'pipeline'\")\n"
        "models = mlflow.search_logged_models(\n"
        "    experiment_ids=[runs[0].info.experiment_id], output_format='list')\n"
        "versions = mlflow.MlflowClient().search_model_versions(\"name = 'wizardcoder-sft'\")\n"
        "print(json.dumps([{'exp': r.data.tags.get('dvc_exp_name'), 'metrics': r.data.metrics,\n"
        "  'tags': r.data.tags, 'params': r.data.params, 'models': len(models),\n"
        "  'versions': sorted(v.tags.get('dvc_md5', '') for v in versions),\n"
        "  'inputs': sorted((d.dataset.name, d.dataset.digest, d.tags[0].value)\n"
        "             for d in r.inputs.dataset_inputs)} for r in runs]))\n"
    )
    return json.loads(run([sys.executable, "-c", code], repo, env).strip().splitlines()[-1])


def test_log_stage_puts_the_whole_experiment_on_the_parent(second_repro):
    repo, env, _ = second_repro  # the log stage ran twice
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    train_dir = next(o["md5"] for o in lock["stages"]["train"]["outs"]
                     if o["path"] == "models/sft")
    parent = next(p for p in _parents(repo, env) if p["exp"] == "workspace")
    # the headline numbers of the files dvc.yaml declares as metrics, pass@1 first by name
    assert sorted(parent["metrics"])[0] == "benchmark/humaneval.pass_at_1", parent["metrics"]
    assert {"benchmark/humaneval.pass_at_1_low", "evolve/r1/r1_kept", "train/train_loss",
            "merge/rows", "dev_score/dev_pass_at_1"} <= set(parent["metrics"])
    assert parent["tags"]["dvc.models/sft"] == train_dir
    assert len(parent["tags"]["mlflow.source.git.commit"]) == 40
    assert parent["params"]["train.max_steps"] == "1"
    names = {name: context for name, _, context in parent["inputs"]}
    assert names == {"train": "training", "humaneval": "evaluation"}
    assert parent["models"] == 1  # logged once, however often the stage runs
    assert train_dir in parent["versions"]  # tracking.register_model: in the registry


def test_mlflow_has_one_run_per_stage_with_tags(pipeline):
    repo, env, _, _ = pipeline
    code = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{repo}/mlflow.db')\n"
        "runs = mlflow.search_runs(experiment_names=['wizardcoder'], output_format='list')\n"
        "runs = [r for r in runs if 'stage' in r.data.tags]\n"
        "client = mlflow.MlflowClient()\n"
        "train = [r for r in runs if r.data.tags['stage'] == 'train'][0]\n"
        "print(json.dumps({'stages': sorted({r.data.tags['stage'] for r in runs}),\n"
        "  'revs': sorted({r.data.tags['git_revision'] for r in runs}),\n"
        "  'loss_points': len(client.get_metric_history(train.info.run_id, 'train/loss')),\n"
        "  'score': [r.data.metrics for r in runs if r.data.tags['stage'] == 'score'][0]}))\n"
    )
    out = run([sys.executable, "-c", code], repo, env).strip().splitlines()[-1]
    info = json.loads(out)
    assert info["stages"] == sorted(["seed", "evolve@r1", "merge", "train", "generate", "score",
                                     "generate_dev", "score_dev", "log"])
    assert len(info["revs"]) == 1 and len(info["revs"][0]) == 40
    assert info["loss_points"] >= 1 and "benchmark/humaneval.pass_at_1" in info["score"]


def test_a_queued_grid_reruns_only_what_changed(workspace):
    """`wizardcoder exp grid --rounds 1 2 --baselines seed_only --run -j 1` on the reproduced
    one-round workspace: every experiment reports pass@1 and a dev score and logs to the one
    MLflow store at the repo root. rounds-1 is the workspace's own setting, so DVC restores
    every stage of it from the run-cache (nothing runs, nothing but its parent logs); rounds-2
    runs evolve@r2 and what follows, never evolve@r1; select-rounds picks from the two evolved;
    removing the round again runs no evolution round."""
    repo, env, dvc = workspace
    run("git add -A && git commit -qm 'first run'", repo, env)
    wiz = f"{sys.executable} -m wizardcoder"
    log = run(f"{wiz} exp grid --rounds 1 2 --baselines seed_only --run -j 1 --timeout 2400",
              repo, env, timeout=2500)
    assert "$ dvc queue start -j 1" in log and "seed-only: Success" in log, log[-3000:]

    show = json.loads(run(f"{dvc} exp show --json --no-pager", repo, env))
    exps = {e["name"]: e["revs"][0]["data"] for e in show[1]["experiments"]}
    assert set(exps) == {"rounds-1", "rounds-2", "seed-only"}
    for name, data in exps.items():
        score = data["metrics"]["metrics/score.json"]["data"]["humaneval"]
        dev = data["metrics"]["metrics/dev_score.json"]["data"]
        assert 0.0 <= score["pass@1"] <= 1.0, name
        assert dev["dev_benchmark"] == "seed_dev" and 0.0 <= dev["dev_pass@1"] <= 1.0, name
    merged = {n: d["metrics"]["metrics/merge.json"]["data"] for n, d in exps.items()}
    assert merged["seed-only"]["rows"] <= 2 and merged["rounds-2"]["rows"] >= 1
    r2 = exps["rounds-2"]["metrics"]["metrics/evolve/r2.json"]["data"]
    assert 0 <= r2["r2_kept"] <= 2 and r2["r2_calls"] >= 1

    # the DVC plot of pass@1 against rounds, across the three experiments
    plots = json.loads(run(f"{dvc} plots diff rounds-1 rounds-2 seed-only --json", repo, env))
    points = plots["data"]["pass@k vs rounds"][0]["content"]["data"]["values"]
    by_exp = {(p["rev"], p["filename"]): (p["rounds"], p["training_data"]) for p in points}
    assert by_exp == {
        (exp, f): expected for exp, expected in (("rounds-1", (1, "evolved")),
                                                 ("rounds-2", (2, "evolved")),
                                                 ("seed-only", (0, "seed_only")))
        for f in ("passk_rounds.json", "dev_passk_rounds.json")}, points

    code = (
        "import json, mlflow\n"
        f"mlflow.set_tracking_uri('sqlite:///{repo}/mlflow.db')\n"
        "runs = mlflow.search_runs(experiment_names=['wizardcoder'], output_format='list')\n"
        "print(json.dumps(sorted({(r.data.tags['dvc_exp_name'], r.data.tags.get('stage', '-'))\n"
        "                         for r in runs})))\n")
    logged = {tuple(x) for x in json.loads(run([sys.executable, "-c", code], repo, env)
                                           .strip().splitlines()[-1])}
    # A stage DVC restored from its run-cache does not run, so it logs nothing: rounds-1 is
    # the workspace's run again. Every stage that ran logged to this one store.
    assert {stage for exp, stage in logged if exp == "rounds-1"} <= {"-", "log"}, logged
    assert {("rounds-2", "evolve@r2"), ("rounds-2", "merge")} <= logged, logged
    assert ("rounds-2", "evolve@r1") not in logged and ("seed-only", "merge") in logged
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    trained_on = {n: d["deps"]["data/merged/train.jsonl"]["hash"] for n, d in exps.items()}
    trained_on["workspace"] = next(d["md5"] for d in lock["stages"]["train"]["deps"]
                                   if d["path"] == "data/merged/train.jsonl")
    for name in exps:
        assert (name, "-") in logged, logged  # the parent run
        for stage in ("train", "score"):  # ran here, or restored from a run on the same rows
            assert (name, stage) in logged or any(
                trained_on[other] == trained_on[name] and (other, stage) in logged
                for other in trained_on if other != name), (name, stage, logged)
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db"))
    caches = [p for p in repo.rglob("llm_requests.sqlite*") if ".cache/wizardcoder" in str(p)]
    assert caches and all(p.parent == repo / ".cache" / "wizardcoder" for p in caches)

    log = run(f"{wiz} exp select-rounds", repo, env)
    record = json.loads((repo / "metrics/round_selection.json").read_text())
    assert [c["rounds"] for c in record["candidates"]] == [1, 2]
    assert record["chosen_rounds"] in (1, 2) and "<- chosen" in log
    assert any(e["experiment"] == "seed-only" for e in record["excluded"])

    # Adopting rounds-2, then removing its round: no evolution round runs again.
    run(f"{dvc} exp apply rounds-2", repo, env)
    back = run(f"{dvc} exp run -S '~rounds.r2'", repo, env)
    assert "Running stage 'evolve@" not in back
    assert "r2" not in yaml.safe_load((repo / "params.yaml").read_text())["rounds"]
    # The log stage still gave every experiment's parent run its metrics.
    parents = [p for p in _parents(repo, env) if p["exp"] not in ("workspace", None)]
    assert len(parents) == 4 and all("benchmark/humaneval.pass_at_1" in p["metrics"]
                                     for p in parents), parents


def test_a_team_shares_data_and_models_through_a_dvc_remote(workspace, tmp_path):
    """`dvc push` to a remote, a fresh clone, `dvc pull`: every output back, byte for byte,
    and nothing to rerun (the README's "Sharing through a DVC remote")."""
    repo, env, dvc = workspace
    remote = tmp_path / "remote"
    run(f"{dvc} remote add -d -f team {remote}", repo, env)
    run("git add -A && git commit -qm 'remote' --allow-empty", repo, env)
    run(f"{dvc} push", repo, env)
    clone = tmp_path / "clone"
    run(f"git clone -q {repo} {clone}", tmp_path, env)
    run(f"{dvc} pull", clone, env)
    for path in ("data/merged/train.jsonl", "models/sft/model.safetensors",
                 "data/eval/samples/humaneval.jsonl", "data/eval/results/humaneval.jsonl"):
        assert (clone / path).read_bytes() == (repo / path).read_bytes(), path
    status = json.loads(run(f"{dvc} status --json", clone, env).strip().splitlines()[-1])
    assert set(status) <= {"log"}, status


def test_mlflow_ui_serves_the_runs(pipeline):
    """`mlflow ui` as documented in the README answers with every stage run."""
    import socket
    import time
    import urllib.request

    repo, env, _, _ = pipeline
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server_env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
         f"sqlite:///{repo}/mlflow.db", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=repo, env=server_env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with opener.open(f"{base}/health", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(1)
        with opener.open(f"{base}/", timeout=30) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
        query = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=wizardcoder"
        with opener.open(query, timeout=30) as resp:
            experiment_id = json.loads(resp.read())["experiment"]["experiment_id"]
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", method="POST",
            data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode(),
            headers={"Content-Type": "application/json"})
        with opener.open(request, timeout=30) as resp:
            runs = json.loads(resp.read())["runs"]
        stages = {tag["value"] for run in runs for tag in run["data"].get("tags", [])
                  if tag["key"] == "stage"}
        assert {"seed", "evolve@r1", "merge", "train", "generate", "score"} <= stages
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
