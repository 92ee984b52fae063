"""The pages people compare experiments on, opened in a real headless Chromium (driven through
ChromeDriver by scripts/screenshot_mlflow.py): the MLflow UI on the store of the reproduced
pipeline plus one `dvc exp run` experiment (runs table, compare view, a parent run with its
stage runs, the registered model) and the `dvc plots show` page. Each test takes a
screenshot and asserts on what the page shows.

The browser comes from the project's install: `bash scripts/install.sh --browser` (Debian's
chromium and chromium-driver). Without it these tests skip, except in CI (CI=true), where a
missing browser is a failure: CI must look at the pages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspace import copy_workspace, run
from wizardcoder import tracking

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# The experiment beside the reproduced workspace: only generate.limit differs, so DVC reruns
# generate, score and log (the rest comes from its run-cache) and pass@k has fewer tasks.
EXP, CHANGE = "limit-1", ("generate.limit", "2", "1")
PARENT_FILTER = f"tags.{tracking.ROLE_TAG} = 'pipeline'"


def screenshot_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import screenshot_mlflow
    finally:
        sys.path.remove(str(REPO / "scripts"))
    return screenshot_mlflow


shots = screenshot_module()


def colourful_pixels(png: Path) -> int:
    """Pixels that are neither white, grey nor black: drawn content, not a blank page."""
    import matplotlib.image

    img = matplotlib.image.imread(str(png))[..., :3]
    spread = img.max(axis=2) - img.min(axis=2)
    return int((spread > 0.15).sum())


@pytest.fixture(scope="module")
def browser_ready():
    reason = shots.missing_browser()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must run the browser tests (CI=true)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the PNGs go: $WIZARDCODER_SCREENSHOTS (to keep them) or a temp dir."""
    keep = os.environ.get("WIZARDCODER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def experiments(pipeline, tmp_path_factory, browser_ready):
    """A copy of the reproduced workspace, committed, and the experiment EXP run on it."""
    repo, env, dvc, _ = pipeline
    copy, env = copy_workspace(repo, env, tmp_path_factory.mktemp("browser") / "repo")
    run("git add -A && git commit -qm 'first run'", copy, env)
    run(f"{dvc} exp run -n {EXP} -S '{CHANGE[0]}={CHANGE[2]}'", copy, env, timeout=1800)
    return copy, env, dvc


@pytest.fixture(scope="module")
def ui(experiments):
    """(mlflow server, browser, page addresses) on the experiments' store."""
    repo = experiments[0]
    with shots.MlflowServer(repo / "mlflow.db", cwd=repo) as server, \
            shots.Browser((1600, 1300)) as browser:
        yield server, browser, shots.mlflow_pages(server, parent_filter=PARENT_FILTER)


def search(server, filter_string: str) -> list[dict]:
    exp = server.api(f"experiments/get-by-name?experiment_name={tracking.EXPERIMENT_NAME}")
    found = server.api("runs/search", {"experiment_ids": [exp["experiment"]["experiment_id"]],
                                       "filter": filter_string, "max_results": 1000})
    return found.get("runs", [])


def tags(run_: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run_["data"].get("tags", [])}


def parents_and_children(server) -> dict[str, list[str]]:
    """{parent run name: its stage runs' names}, from the tracking server's API."""
    out = {}
    for parent in search(server, PARENT_FILTER):
        children = search(server, f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'")
        out[parent["info"]["run_name"]] = sorted(c["info"]["run_name"] for c in children)
    return out


def test_runs_table_nests_each_experiments_stage_runs_under_its_parent(ui, screenshots):
    server, browser, pages = ui
    expected = parents_and_children(server)
    assert len(expected) == 2 and EXP in expected, expected
    assert all(expected.values()), expected  # every parent has stage runs
    text = shots.shoot_runs_table(browser, pages["runs"], screenshots / "runs.png", EXP,
                                  columns=("benchmark/pass_at_1",))
    lines = [line.strip() for line in text.splitlines()]
    rows = {name: lines.index(name) for name in [*expected, *sum(expected.values(), [])]
            if name in lines}
    # Expanded: every stage run is shown, right below its own parent (before the next one).
    parents = sorted(expected, key=lambda name: rows[name])
    for i, parent in enumerate(parents):
        end = rows[parents[i + 1]] if i + 1 < len(parents) else len(lines)
        for child in expected[parent]:
            assert child in rows and rows[parent] < rows[child] < end, (parent, child, lines)
    assert "benchmark/pass_at_1" in text  # the headline column, on the parent rows
    assert colourful_pixels(screenshots / "runs.png") > 100  # run colour dots, links


def test_compare_view_shows_the_param_that_differs_and_pass_at_1_first(ui, screenshots):
    server, browser, pages = ui
    tables = shots.shoot_compare(browser, pages["compare"], screenshots / "compare.png")
    # The two experiments differ in one param, and only that one shows under "diff only".
    assert tables["diff"]["Parameters"] == [list(CHANGE)], tables["diff"]["Parameters"]
    metrics = tables["all"]["Metrics"]
    assert metrics and metrics[0][0] == "benchmark/pass_at_1", metrics  # first among them
    # What follows from fewer tasks: the task count differs, the benchmark is the same.
    diff = {row[0]: row[1:] for row in tables["diff"]["Metrics"]}
    assert diff.get("benchmark/tasks") == ["2", "1"], diff
    assert not any(name.startswith("dev_score/") for name in diff), diff  # not rerun
    assert colourful_pixels(screenshots / "compare.png") > 100  # the switches, links


def test_parent_run_page_lists_its_stage_runs_metrics_and_model_version(ui, experiments,
                                                                      screenshots):
    server, browser, pages = ui
    (parent,) = [p for p in search(server, PARENT_FILTER) if p["info"]["run_name"] == EXP]
    url = pages["parent"].rsplit("/", 1)[0] + f"/{parent['info']['run_id']}"
    text = shots.shoot_run(browser, url, screenshots / "parent.png")
    children = parents_and_children(server)[EXP]
    listed = text.split("Child runs", 1)[1]
    assert all(child in listed for child in children), (children, listed[:800])
    assert f"{EXP}/score" in children  # the stages DVC reran logged here; the rest restored
    assert "benchmark/pass_at_1" in text and f"{CHANGE[0]}\n{CHANGE[2]}" in text
    assert f"dvc_exp_name: {EXP}" in " ".join(text.split()).replace(" : ", ": ")
    params = yaml.safe_load((experiments[0] / "params.yaml").read_text())
    model = params["tracking"]["register_model"]
    assert "Registered models" in text and model in text.split("Registered models", 1)[1]


def test_registered_model_has_one_version_per_experiment(ui, screenshots):
    server, browser, pages = ui
    name = pages["model"].rsplit("/", 1)[1]
    versions = server.api(f"model-versions/search?filter=name%3D%27{name}%27")["model_versions"]
    by_exp = {tags({"data": v}).get("dvc_exp_name"): v["version"] for v in versions}
    assert EXP in by_exp and len(by_exp) == 2, by_exp
    text = shots.shoot_model(browser, pages["model"], screenshots / "model.png")
    flat = " ".join(text.split())
    for exp_name, version in by_exp.items():
        assert f"Version {version}" in flat and f"dvc_exp_name : {exp_name}" in flat, flat


def test_dvc_plots_show_renders_offline_in_chromium(experiments, screenshots):
    """`dvc plots show` with the committed template: every plot of dvc.yaml is drawn with
    no network (the vega libraries are inlined; the page loads nothing)."""
    repo, env, dvc = experiments
    shown = json.loads(subprocess.run(f"{dvc} plots show --json", cwd=repo, env=env, shell=True,
                                      capture_output=True, text=True, check=True).stdout)
    assert not shown.get("errors"), shown.get("errors")
    empty = [name for name, data in shown["data"].items() if not data]
    assert not empty, f"plots without data: {empty}"  # no chart of a feature that is off
    out = repo / "dvc_plots"
    shutil.rmtree(out, ignore_errors=True)
    run(f"{dvc} plots show -o {out}", repo, env)  # .dvc/config's template
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
    n_plots = page.count("vegaEmbed(")
    assert n_plots == len(shown["data"]), n_plots
    with shots.Browser((1400, 1000)) as browser:
        drawn = shots.shoot_page(browser, (out / "index.html").as_uri(),
                                 screenshots / "plots.png", charts=n_plots)
        text = browser.text()
    assert drawn == n_plots and "Error" not in text
    assert "training loss per step" in text
    assert colourful_pixels(screenshots / "plots.png") > 2000
