"""Screenshots of the MLflow UI (and of any local page) in headless Chromium.

    python scripts/screenshot_mlflow.py --db mlflow.db --out-dir docs
        starts `mlflow server` on the sqlite store (127.0.0.1, a free port, one worker, no job
        runner), waits for /health, saves the runs table (parent run per experiment, stage
        runs nested) as mlflow_runs.png, the training-loss chart of the newest train run as
        mlflow_metric.png, the two newest experiments side by side (params that differ) as
        mlflow_compare.png, the newest experiment's parent run (its stage runs, metrics,
        registered model) as mlflow_parent.png and the registered model's versions as
        mlflow_model.png (the last three when the store has them), then stops the server.
    python scripts/screenshot_mlflow.py --page dvc_plots/index.html --out plots.png
        one page (a file or URL), e.g. the output of `dvc plots show`.

Needs Chromium and ChromeDriver (`bash scripts/install.sh --browser`: Debian's chromium and
chromium-driver), driven over WebDriver's HTTP API with the standard library only. Nothing
leaves loopback: Chromium runs with background networking off and a fresh profile.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def missing_browser() -> str | None:
    """Why the browser cannot run here (None when chromium and chromedriver are present)."""
    if not find_chromium():
        return "chromium not installed (bash scripts/install.sh --browser installs it)"
    if not shutil.which("chromedriver"):
        return "chromedriver not installed (bash scripts/install.sh --browser installs it)"
    return None


def chromium_args(chromium: str, profile: str) -> list[str]:
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--user-data-dir={profile}"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 120) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: {exc.code} {exc.read()[:2000]!r}") from exc


class Browser:
    """Headless Chromium driven through ChromeDriver's W3C WebDriver HTTP API (stdlib only):
    navigate, wait for a JavaScript condition, click, take a screenshot."""

    def __init__(self, size: tuple[int, int] = (1600, 1000)):
        self.size = size
        reason = missing_browser()
        if reason:
            raise SystemExit(reason)
        self.chromium, self.driver = find_chromium(), shutil.which("chromedriver")

    def __enter__(self) -> Browser:
        self.profile = tempfile.TemporaryDirectory(prefix="chromium-")
        port = free_port()
        self.proc = subprocess.Popen([self.driver, f"--port={port}"], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if _http("GET", f"{self.base}/status", timeout=2)["value"].get("ready"):
                    break
            except (OSError, RuntimeError, KeyError):
                time.sleep(0.1)
        args = [*chromium_args(self.chromium, self.profile.name)[1:],
                f"--window-size={self.size[0]},{self.size[1]}"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": self.chromium, "args": args}}}}
        session_id = _http("POST", f"{self.base}/session", caps)["value"]["sessionId"]
        self.session = f"{self.base}/session/{session_id}"
        return self

    def __exit__(self, *exc) -> None:
        try:
            _http("DELETE", self.session, timeout=30)
        except Exception:
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        self.profile.cleanup()

    def get(self, url: str) -> None:
        _http("POST", f"{self.session}/url", {"url": url})

    def js(self, script: str, *args):
        return _http("POST", f"{self.session}/execute/sync",
                     {"script": script, "args": list(args)})["value"]

    def wait(self, condition: str, timeout_s: float = 60, what: str = "") -> object:
        """Poll ``return <condition>`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.js(f"return {condition};")
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"page never showed {what or condition}")

    def find(self, xpath: str) -> str:
        found = _http("POST", f"{self.session}/element", {"using": "xpath", "value": xpath})
        return next(iter(found["value"].values()))

    def click(self, xpath: str) -> None:
        _http("POST", f"{self.session}/element/{self.find(xpath)}/click", {})

    def type(self, xpath: str, text: str) -> None:
        _http("POST", f"{self.session}/element/{self.find(xpath)}/value", {"text": text})

    def text(self) -> str:
        return self.js("return document.body.innerText;")

    def screenshot(self, out: str | Path) -> Path:
        out = Path(out).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        png = _http("GET", f"{self.session}/screenshot")["value"]
        out.write_bytes(base64.b64decode(png))
        return out


class MlflowServer:
    """`mlflow server` on a sqlite store, started and stopped as a context manager."""

    def __init__(self, db: str | Path, port: int | None = None, timeout_s: float = 180,
                 cwd: str | Path | None = None):
        self.db = Path(db).resolve()
        # relative artifact locations resolve against it: the checkout root, beside the db
        self.cwd = Path(cwd) if cwd else self.db.parent
        if not self.db.is_file():
            raise SystemExit(f"{self.db}: no MLflow store (run the pipeline first)")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout_s = timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> MlflowServer:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
               f"sqlite:///{self.db}", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.cwd)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"mlflow server exited: {self.log.read()[-3000:]!r}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"mlflow server not healthy after {self.timeout_s:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its worker
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()

    def api(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())


HEADLINE_COLUMNS = ("benchmark/humaneval.pass_at_1", "train/train_loss", "merge/rows",
                    "evolve/r1/r1_kept")
HIDDEN_COLUMNS = ("Dataset", "Models")
# wizardcoder.tracking's names (this script runs without the package too)
ROLE_TAG, PARENT_ROLE = "pipeline_role", "pipeline"


def mlflow_pages(server: MlflowServer, experiment: str = "wizardcoder",
                 parent_filter: str = f"tags.{ROLE_TAG} = '{PARENT_ROLE}'") -> dict[str, str]:
    """UI addresses: the runs table; the metric charts of the newest train run; the newest
    parent run (``parent``) and the two newest side by side (``compare``); the first
    registered model (``model``). A page the store has nothing for is left out."""
    exp = server.api(f"experiments/get-by-name?experiment_name={experiment}")["experiment"]
    exp_id = exp["experiment_id"]

    def newest(filter_string: str, n: int) -> list[str]:
        found = server.api("runs/search", {"experiment_ids": [exp_id], "max_results": n,
                                           "filter": filter_string,
                                           "order_by": ["attributes.start_time DESC"]})
        return [r["info"]["run_id"] for r in found.get("runs", [])]

    pages = {"runs": f"{server.url}/#/experiments/{exp_id}/runs"}
    if train := newest("tags.stage = 'train'", 1):
        pages["metric"] = f"{server.url}/#/experiments/{exp_id}/runs/{train[0]}/model-metrics"
    parents = newest(parent_filter, 2)
    if parents:
        pages["parent"] = f"{server.url}/#/experiments/{exp_id}/runs/{parents[0]}"
    if len(parents) == 2:
        runs = json.dumps(parents[::-1], separators=(",", ":"))
        pages["compare"] = (f"{server.url}/#/compare-runs?runs={runs}"
                            f"&experiments={json.dumps([exp_id], separators=(',', ':'))}")
    models = server.api("registered-models/search?max_results=1").get("registered_models")
    if models:
        pages["model"] = f"{server.url}/#/models/{models[0]['name']}"
    return pages


def _close_assistant(b: Browser) -> None:
    b.js("const c = document.querySelector('button[aria-label=Close]'); if (c) c.click();")


EXPANDERS = "button[data-component-id$='runnamecellrenderer.tsx_46']"


def shoot_runs_table(b: Browser, url: str, out: str | Path, wait_for: str | None = None,
                     columns: tuple[str, ...] = HEADLINE_COLUMNS) -> str:
    """The runs table with the headline metric columns and every parent row expanded
    (once ``wait_for`` is on the page, or any parent row); returns the page's text."""
    b.get(url)
    if wait_for:
        b.wait(f"document.body.innerText.includes({json.dumps(wait_for)})", 90, wait_for)
    else:
        b.wait(f"document.querySelectorAll({json.dumps(EXPANDERS)}).length", 90, "a parent run")
    time.sleep(1)
    _close_assistant(b)
    b.click("//button[normalize-space()='Columns']")
    search = "//input[@placeholder='Search columns']"
    for name in (*HIDDEN_COLUMNS, *columns):
        b.type(search, "\ue009a\ue009\ue017" + name)  # ctrl+a, delete, then the name
        title = f"//span[contains(@class,'tree-title') and normalize-space()='{name}']"
        try:
            b.wait(f"document.evaluate({json.dumps(title)}, document, null, 9, null)"
                   ".singleNodeValue", 10, name)
            b.click(title)
        except TimeoutError:
            print(f"column {name!r} not offered (no such metric yet)", file=sys.stderr)
    b.click("//button[normalize-space()='Columns']")
    # expand the parent runs: their stage runs nest below
    b.js(f"document.querySelectorAll({json.dumps(EXPANDERS)}).forEach(e => e.click());")
    time.sleep(2)
    b.screenshot(out)
    return b.text()


def table_rows(b: Browser) -> list[list[str]]:
    """The runs table's rows in the order the page shows them (the grid positions its rows
    itself: document order is not display order), each as its cells' lines."""
    return b.js(r"""
        const rows = new Map();
        document.querySelectorAll('.ag-row[row-index]').forEach(r => {
          const i = Number(r.getAttribute('row-index'));
          rows.set(i, (rows.get(i) || []).concat(r.innerText.split('\n')));
        });
        return Array.from(rows.keys()).sort((a, b) => a - b).map(i => rows.get(i)
            .map(t => t.trim()).filter(t => t));""")


def shoot_metric(b: Browser, url: str, out: str | Path, search: str = "loss") -> str:
    """The run's metric charts whose name contains ``search``; returns the page's text."""
    b.get(url)
    b.wait("document.body.innerText.includes('Model metrics')", 90, "the metric charts")
    _close_assistant(b)
    b.type("//input[@placeholder='Search metric charts']", search)
    b.wait("document.querySelectorAll('.js-plotly-plot').length", 60, "a plotly chart")
    time.sleep(2)
    b.screenshot(out)
    return b.text()


COMPARED_TABLES = r"""
    const after = (el, selector) => Array.from(document.querySelectorAll(selector))
        .filter(e => el.compareDocumentPosition(e) & Node.DOCUMENT_POSITION_FOLLOWING);
    const cells = root => Array.from(root.querySelectorAll('[role=rowgroup] > *'))
        .map(c => c.innerText.trim());
    const out = {};
    const params = document.querySelector('[aria-label="Parameters - Show diff only"]');
    if (params) {
      const table = after(params, 'table')[0];
      out.Parameters = table ? Array.from(table.querySelectorAll('tr')).map(r =>
          Array.from(r.querySelectorAll('th, td')).map(c => c.innerText.trim())) : [];
    }
    const metrics = document.querySelector('[aria-label="Metrics - Show diff only"]');
    if (metrics) {  // two virtualized grids: the names, then every run's value row by row
      const grids = after(metrics, '[role=grid]').slice(0, 2).map(cells);
      const [names, values] = grids.length === 2 ? grids : [[], []];
      const per = names.length ? values.length / names.length : 0;
      out.Metrics = names.map((n, i) => [n, ...values.slice(i * per, (i + 1) * per)]);
    }
    return out;"""


def shoot_compare(b: Browser, url: str, out: str | Path) -> dict[str, dict]:
    """The compare view of two runs, then with "Show diff only" on for every table,
    scrolled to the params and metrics (the screenshot). Returns both states' tables:
    ``{"all": {"Parameters": [[name, value of run 1, value of run 2], ...], "Metrics":
    [...]}, "diff": {...}}``, rows in the order the page shows them."""
    b.get(url)
    b.wait("document.querySelectorAll('[aria-label$=\"Show diff only\"]').length", 90,
           "the compared tables")
    _close_assistant(b)
    time.sleep(1)
    every = b.js(COMPARED_TABLES)
    b.js("document.querySelectorAll('[role=switch][aria-label$=\"Show diff only\"]').forEach("
         "s => { if (s.getAttribute('aria-checked') !== 'true') s.click(); });")
    time.sleep(1)
    b.js("document.querySelector('[aria-label=\"Parameters - Show diff only\"]')"
         ".scrollIntoView({block: 'start'}); window.scrollBy(0, -80);")
    time.sleep(1)
    b.screenshot(out)
    return {"all": every, "diff": b.js(COMPARED_TABLES)}


def shoot_run(b: Browser, url: str, out: str | Path, wait_for: str = "Child runs") -> str:
    """A run's overview page (a parent lists its child runs, metrics, params, registered
    model versions); returns the page's text."""
    b.get(url)
    b.wait(f"document.body.innerText.includes({json.dumps(wait_for)})", 90, wait_for)
    _close_assistant(b)
    time.sleep(1)
    b.screenshot(out)
    return b.text()


def shoot_model(b: Browser, url: str, out: str | Path) -> str:
    """A registered model's page: its versions with their tags; returns the page's text."""
    b.get(url)
    b.wait("document.body.innerText.includes('Version 1')", 90, "a model version")
    _close_assistant(b)
    time.sleep(1)
    b.screenshot(out)
    return b.text()


def shoot_page(b: Browser, url: str, out: str | Path, charts: int = 1) -> int:
    """A page with vega charts (e.g. `dvc plots show`): waits for ``charts`` drawn charts
    (larger than 50 x 50 px: a plot whose data failed is an empty, tiny canvas)."""
    b.get(url)
    drawn = ("Array.from(document.querySelectorAll('canvas.marks, svg.marks'))"
             ".filter(e => e.getBoundingClientRect().width > 50"
             " && e.getBoundingClientRect().height > 50).length")
    b.wait(f"{drawn} >= {charts}", 60, f"{charts} vega charts")
    time.sleep(1)
    b.screenshot(out)
    return b.js(f"return {drawn};")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="mlflow.db", help="sqlite MLflow store")
    parser.add_argument("--out-dir", default="docs", help="where the MLflow PNGs go")
    parser.add_argument("--experiment", default="wizardcoder")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--page", help="screenshot only this file or URL (no MLflow)")
    parser.add_argument("--charts", type=int, default=1, help="vega charts --page must show")
    parser.add_argument("--out", help="PNG for --page")
    parser.add_argument("--size", default="1600x1000", help="window WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.page:
        url = args.page if "://" in args.page else Path(args.page).resolve().as_uri()
        with Browser(size) as b:
            n = shoot_page(b, url, args.out or "page.png", args.charts)
        print(f"{url}: {n} charts -> {args.out or 'page.png'}")
        return 0
    out_dir = Path(args.out_dir)
    with MlflowServer(args.db, args.port) as server, Browser(size) as b:
        pages = mlflow_pages(server, args.experiment)
        shoot_runs_table(b, pages["runs"], out_dir / "mlflow_runs.png")
        print(f"runs table: {pages['runs']} -> {out_dir / 'mlflow_runs.png'}")
        shots = {"metric": shoot_metric, "compare": shoot_compare, "parent": shoot_run,
                 "model": shoot_model}
        for name, shoot in shots.items():
            if name in pages:
                shoot(b, pages[name], out_dir / f"mlflow_{name}.png")
                print(f"{name}: {pages[name]} -> {out_dir / f'mlflow_{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
