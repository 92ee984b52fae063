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
# Charts of features the default run leaves off (evolve.verify: none, train.eval_fraction: 0).
OFF_BY_DEFAULT = {"eval loss", "verification per round", "rows eliminated by tests"}
OFF_TITLES = ("loss on the held-out eval split", "answers passing their own tests",
              "rows eliminated by verification")
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


@pytest.fixture(scope="session")  # session: set up before the session-wide `pipeline`
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
def experiments(browser_ready, pipeline, tmp_path_factory):
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
                                       "filter": filter_string, "max_results": 1000,
                                       "order_by": ["attributes.start_time ASC"]})
    return found.get("runs", [])


def values(run_: dict, kind: str) -> dict[str, str]:
    """A run's params, tags or metrics (as the API returns them) by name."""
    return {item["key"]: str(item["value"]) for item in run_["data"].get(kind, [])}


def parents(server) -> dict[str, dict]:
    """{parent run name: the run}, oldest first (the reproduced workspace, then EXP)."""
    return {run_["info"]["run_name"]: run_ for run_ in search(server, PARENT_FILTER)}


def children(server, parent: dict) -> list[str]:
    found = search(server, f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'")
    return sorted(run_["info"]["run_name"] for run_ in found)


def pass_at_1(metrics: dict[str, str]) -> str:
    """The name of the reported benchmark's pass@1 among a parent's metrics."""
    return next(name for name in sorted(metrics)
                if name.startswith("benchmark/") and name.endswith("pass_at_1"))


def test_runs_table_nests_each_experiments_stage_runs_under_its_parent(ui, screenshots):
    server, browser, pages = ui
    runs = parents(server)
    assert len(runs) == 2 and EXP in runs, list(runs)
    nested = {name: children(server, run_) for name, run_ in runs.items()}
    assert all(nested.values()), nested  # every parent has stage runs
    headline = pass_at_1(values(runs[EXP], "metrics"))
    text = shots.shoot_runs_table(browser, pages["runs"], screenshots / "runs.png", EXP,
                                  columns=(headline,))
    rows = shots.table_rows(browser)
    names = [next((c for c in row if c in {*runs, *sum(nested.values(), [])}), None)
             for row in rows]
    # Expanded: each parent's row, then exactly its stage runs, then the next parent.
    at = [names.index(parent) for parent in runs]
    for parent, start in zip(runs, at, strict=True):
        end = min([i for i in at if i > start], default=len(names))
        assert sorted(names[start + 1:end]) == nested[parent], (parent, names)
    assert headline in text  # the headline column is shown
    assert colourful_pixels(screenshots / "runs.png") > 100  # run colour dots, links


def test_compare_view_shows_the_param_that_differs_and_pass_at_1_first(ui, screenshots):
    server, browser, pages = ui
    runs = list(parents(server).values())
    tables = shots.shoot_compare(browser, pages["compare"], screenshots / "compare.png")
    # The two experiments differ in one param, and only that one shows under "diff only".
    assert tables["diff"]["Parameters"] == [list(CHANGE)], tables["diff"]["Parameters"]
    metrics = [values(run_, "metrics") for run_ in runs]
    assert [row[0] for row in tables["all"]["Metrics"]][:1] == [pass_at_1(metrics[1])]
    # "diff only" leaves exactly the metrics whose values differ, with both values.
    differ = sorted(name for name in {*metrics[0], *metrics[1]}
                    if metrics[0].get(name) != metrics[1].get(name))
    assert sorted(row[0] for row in tables["diff"]["Metrics"]) == differ, tables["diff"]
    assert colourful_pixels(screenshots / "compare.png") > 100  # the switches, links


def test_parent_run_page_lists_its_stage_runs_metrics_and_model_version(ui, experiments,
                                                                      screenshots):
    server, browser, pages = ui
    parent = parents(server)[EXP]
    url = pages["parent"].rsplit("/", 1)[0] + f"/{parent['info']['run_id']}"
    text = shots.shoot_run(browser, url, screenshots / "parent.png")
    stages = children(server, parent)
    listed = text.split("Child runs", 1)[1]
    assert all(stage in listed for stage in stages), (stages, listed[:800])
    assert f"{EXP}/score" in stages  # the stages DVC reran logged here; the rest restored
    metrics = values(parent, "metrics")
    assert f"Metrics ({len(metrics)})" in text and all(name in text for name in metrics)
    assert f"dvc_exp_name: {EXP}" in " ".join(text.split()).replace(" : ", ": ")
    params = yaml.safe_load((experiments[0] / "params.yaml").read_text())
    model = params["tracking"]["register_model"]
    assert "Registered models" in text and model in text.split("Registered models", 1)[1]
    assert colourful_pixels(screenshots / "parent.png") > 100


def test_registered_model_has_one_version_per_experiment(ui, screenshots):
    server, browser, pages = ui
    name = pages["model"].rsplit("/", 1)[1]
    versions = server.api(f"model-versions/search?filter=name%3D%27{name}%27")["model_versions"]
    by_exp = {values({"data": v}, "tags").get("dvc_exp_name"): v["version"] for v in versions}
    assert EXP in by_exp and len(by_exp) == len(versions) == 2, by_exp
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
    # Features that are off (verification, the eval split) leave their data files empty: DVC
    # lists those plots with no data and embeds an empty spec; the page hides them.
    empty = {name for name, data in shown["data"].items() if not data}
    assert empty <= OFF_BY_DEFAULT, f"plots without data: {sorted(empty - OFF_BY_DEFAULT)}"
    out = repo / "dvc_plots"
    shutil.rmtree(out, ignore_errors=True)
    run(f"{dvc} plots show -o {out}", repo, env)  # .dvc/config's template
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vegaEmbed" in page
    assert page.count("vegaEmbed(") == len(shown["data"])
    charts = len(shown["data"]) - len(empty)
    with shots.Browser((1400, 1000)) as browser:
        drawn = shots.shoot_page(browser, (out / "index.html").as_uri(),
                                 screenshots / "plots.png", charts=charts)
        text = browser.text()
        hidden = browser.js("return document.querySelectorAll('div[data-empty]').length;")
    assert drawn == charts and hidden == len(empty) and "Error" not in text, (drawn, hidden)
    # Charts draw their titles on a canvas: read them from the specs the page embeds.
    assert "training loss per step" in page
    for title in OFF_TITLES:  # no chart, not even an empty one, for a feature that is off
        assert title not in page, title
    # The first screen of the tiny run: one point per chart, legends, the smoothing slider (a
    # page that drew nothing has none).
    assert colourful_pixels(screenshots / "plots.png") > 300
