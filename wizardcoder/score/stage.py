"""Stage `score`: sandboxed execution of the samples and unbiased pass@k (section `score`).

    python -m stages.score --samples data/eval/samples --metrics metrics/score.json \
        --details metrics/details/score.json --results data/eval/results \
        --run-facts metrics/run_facts/score.json

Score the generate stage's samples (a directory with one ``<benchmark>.jsonl`` per benchmark of
``generate.benchmarks``: one results file each and one metrics entry each), or one samples
file: ours, or external samples in the human-eval (task_id + completion) or evalplus
(task_id + solution) JSONL format, for any benchmark of the registry (``--benchmark``).
Without a params file the `score` defaults apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.headline import write_metrics
from wizardcoder.jsonl import iter_jsonl, write_json, write_jsonl
from wizardcoder.sandbox import SandboxSession
from wizardcoder.sandbox.pool import ISOLATION_MODES
from wizardcoder.score.config import ScoreConfig
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


RAW_FIELDS = ("raw", "response")  # a model's whole chat response, sanitized before scoring


def read_samples(path: str) -> tuple[dict, list[dict]]:
    """Header (or {}) and flat rows {task_id, completion|solution|raw, line} from our generate
    output or an external samples file: human-eval (``task_id`` + ``completion``, the
    continuation of the prompt), evalplus (``task_id`` + ``solution``, a whole program;
    preferred when both are present) or raw chat responses (``raw`` or ``response``: fenced
    code, prose, demos; see :func:`prepare_rows`). A row that also has its raw response keeps
    it under ``raw`` (for ``--sanitize``). Malformed lines raise DataError naming the file,
    the line and the field."""
    header, rows = {}, []
    for line, obj in iter_jsonl(path):
        if obj.get("type") == "header":
            if header or rows:
                raise DataError(path, line, "type", "a header is allowed on the first line only")
            header = obj
            continue
        if not isinstance(obj.get("task_id"), str) or not obj["task_id"]:
            raise DataError(path, line, "task_id", "missing or not a non-empty string")
        if obj.get("type") == "sample":  # our own generate output: n samples per task
            for field in ("solution", "completion", "raw"):
                codes = obj.get(field)
                if codes is not None and not (isinstance(codes, list) and
                                              all(isinstance(c, str) for c in codes)):
                    raise DataError(path, line, field, "expected a list of strings")
            codes = obj.get("solution") or []
            field = "solution" if codes else "completion"
            codes = codes or obj.get("completion") or []
            raws = obj.get("raw") or []
            if not codes and raws:
                field, codes = "raw", raws
            if not codes:
                raise DataError(path, line, "solution", "no samples in this row")
            if raws and len(raws) != len(codes):
                raise DataError(path, line, "raw", f"{len(raws)} raw responses for "
                                f"{len(codes)} samples")
            rows += [{"task_id": obj["task_id"], field: code, "index": i, "line": line,
                      **({"raw": raws[i]} if raws else {})}
                     for i, code in enumerate(codes)]
            continue
        field = next((f for f in ("solution", "completion", *RAW_FIELDS) if f in obj),
                     "completion")
        if not isinstance(obj.get(field), str):
            raise DataError(path, line, field, "expected a string `completion` (human-eval "
                            "format), `solution` (evalplus format) or `raw` (a chat response)")
        row = {"task_id": obj["task_id"], "line": line}
        row["raw" if field in RAW_FIELDS else field] = obj[field]
        raw = next((obj[f] for f in RAW_FIELDS if isinstance(obj.get(f), str)), None)
        if raw is not None:
            row["raw"] = raw
        rows.append(row)
    return header, rows


def prepare_rows(rows: list[dict], problems: dict[str, dict], sanitize: bool) -> list[dict]:
    """Rows ready to score: a raw chat response becomes a ``solution`` through the project's
    sanitizer (the code block defining the entry point, its helpers and imports; prose, demos
    and ``if __name__ == "__main__":`` blocks dropped), as generate does and as
    ``evalplus.sanitize`` does for evalplus. ``sanitize``: every row is treated so (its raw
    response when it has one, else its solution or completion)."""
    from wizardcoder.sanitize import sanitize as sanitize_text

    out = []
    for row in rows:
        has_code = "solution" in row or "completion" in row
        if has_code and not sanitize:
            out.append({k: v for k, v in row.items() if k != "raw"})
            continue
        text = row.get("raw", row.get("solution", row.get("completion")))
        problem = problems[row["task_id"]]
        if problem.get("language", "python") != "python":  # MultiPL-E: its own rule
            out.append({"task_id": row["task_id"], "line": row.get("line"),
                        **({"index": row["index"]} if "index" in row else {}), "raw": text})
            continue
        out.append({"task_id": row["task_id"], "line": row.get("line"),
                    **({"index": row["index"]} if "index" in row else {}),
                    "solution": sanitize_text(text, problem["entry_point"], problem["prompt"])})
    return out


def expected_tasks(path: str, header: dict, rows: list[dict], problems: dict[str, dict],
                   name: str, tasks: list[str] | None) -> list[str]:
    """The tasks this file must cover: ``tasks`` (the user's subset, e.g. ``--tasks``), else
    the header's ``task_ids`` (our generate output: ``generate.limit`` / ``task_ids`` chose
    them), else the whole benchmark. A missing task is a DataError listing every missing id
    (pass@k over some tasks is not the benchmark's pass@k); a row outside a named subset too."""
    if tasks is not None:
        subset, source = list(dict.fromkeys(tasks)), "--tasks"
        unknown = [t for t in subset if t not in problems]
        if unknown:
            raise ConfigError(f"--tasks: not tasks of {name}: {', '.join(unknown)}")
    elif isinstance(header.get("task_ids"), list) and header["task_ids"]:
        subset, source = header["task_ids"], "the header's task_ids"
        if not all(isinstance(t, str) for t in subset):
            raise DataError(path, 1, "task_ids", "expected a list of task id strings")
        check_task_ids(path, [{"task_id": t, "line": 1} for t in subset], problems, name)
    else:
        subset, source = list(problems), None
    if source is not None:
        chosen = set(subset)
        for row in rows:
            if row["task_id"] not in chosen:
                raise DataError(path, row.get("line"), "task_id",
                                f"task {row['task_id']!r} is not in {source}")
    present = {r["task_id"] for r in rows}
    missing = [t for t in subset if t not in present]
    if missing:
        scope = f"the tasks named by {source}" if source else f"the {name} benchmark"
        raise DataError(path, None, "task_id",
                        f"{len(missing)} of {len(subset)} tasks of {scope} have no sample: "
                        f"{', '.join(missing)} (to score only some tasks, name them: "
                        "--tasks ID,ID,...)")
    return subset


MBPP_PLUS_TASKS = 378


def guess_benchmark(header: dict, rows: list[dict]) -> str:
    """The header's benchmark, else for Mbpp/ task ids MBPP (more tasks than MBPP+ has) or
    MBPP+, else HumanEval."""
    if header.get("benchmark"):
        return str(header["benchmark"])
    if rows and all(r["task_id"].startswith("Mbpp/") for r in rows):
        return "mbpp" if len({r["task_id"] for r in rows}) > MBPP_PLUS_TASKS else "mbpp+"
    return "humaneval"


def check_task_ids(path: str, rows: list[dict], problems: dict[str, dict], name: str) -> None:
    """Every row's task must be in the benchmark: DataError naming the first line that is
    not."""
    for row in rows:
        if row["task_id"] not in problems:
            close = difflib.get_close_matches(row["task_id"], list(problems), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(path, row.get("line"), "task_id",
                            f"unknown task {row['task_id']!r}: not a task of {name}{hint}")


def outputs_beside(samples: str) -> tuple[str, str]:
    """Default (metrics, results) of an external samples file: next to it, named after it
    (theirs.jsonl -> theirs.score.json, theirs.results.jsonl), never the pipeline's files."""
    path = Path(samples)
    stem = path.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    return str(path.with_name(f"{stem}.score.json")), str(path.with_name(f"{stem}.results.jsonl"))


def load_set(samples: str, benchmark: str | None = None, tasks: list[str] | None = None,
             sanitize: bool = False) -> tuple[str, dict, list[dict]]:
    """(benchmark, problems, rows ready to score) of a samples file, every line checked:
    each names a task of the benchmark and every expected task has a sample
    (:func:`expected_tasks`; ``tasks``: only these)."""
    from wizardcoder.benchmarks.problems import get_benchmark, load_benchmark

    header, rows = read_samples(samples)
    if not rows:
        raise DataError(samples, None, None, "no samples")
    name = benchmark or guess_benchmark(header, rows)
    get_benchmark(name, "--benchmark" if benchmark else f"{samples}: the header's benchmark")
    problems = load_benchmark(name)
    check_task_ids(samples, rows, problems, name)
    subset = expected_tasks(samples, header, rows, problems, name, tasks)
    problems = {t: problems[t] for t in sorted(subset)}
    return name, problems, prepare_rows(rows, problems, sanitize)


def run(params: str | None, samples: str, metrics: str | None, results: str | None,
        benchmark: str | None = None, tasks: list[str] | None = None,
        sanitize: bool = False, isolation: str | None = None,
        pipeline_stage: bool = False, facts: str | None = None,
        details: str | None = None) -> dict:
    """Score a samples file, or a directory of them (the generate stage's output: one
    ``<benchmark>.jsonl`` each, :func:`score_benchmarks`); ``params`` None uses the `score`
    defaults. Nothing is written unless every file is valid (:func:`load_set`).
    ``sanitize``: every row is a raw chat response (:func:`prepare_rows`). ``metrics`` /
    ``results`` None: next to the samples file (:func:`outputs_beside`). ``pipeline_stage``:
    the DVC stage, logged under the pipeline's parent run; otherwise (external samples) a run
    of its own. ``facts``: where the run times go besides MLflow (the run-facts file)."""
    config = load_section(params, "score", ScoreConfig) if params else ScoreConfig()
    if isolation is not None:  # --isolation overrides score.isolation
        config = dataclasses.replace(config, isolation=isolation)
    if Path(samples).is_dir():
        if benchmark or tasks or not (metrics and results):
            raise ConfigError(f"--samples {samples} is a directory (one file per benchmark): "
                              "give --metrics and --results (a directory), and no "
                              "--benchmark or --tasks")
        return score_benchmarks(config, samples, metrics, results, sanitize=sanitize,
                                nested=pipeline_stage, facts=facts, details=details)
    name, problems, rows = load_set(samples, benchmark, tasks, sanitize)
    beside = outputs_beside(samples)
    return score_and_write("score", config, name, problems, rows, metrics or beside[0],
                           results or beside[1], nested=pipeline_stage,
                           run_name=None if pipeline_stage else f"score {Path(samples).name}",
                           facts=facts, details=details)


def score_benchmarks(config: ScoreConfig, samples_dir: str, metrics: str, results_dir: str,
                     *, sanitize: bool = False, nested: bool = True, facts: str | None = None,
                     details: str | None = None) -> dict:
    """Score every ``<benchmark>.jsonl`` of ``samples_dir`` (the generate stage's output):
    ``results_dir/<benchmark>.jsonl`` per benchmark, and one metrics file with an entry per
    benchmark (``{"humaneval": {"pass@1": ..., "pass@1_low": ...}, "mbpp": {...}}``; the
    details and run facts the same way). Every file is checked before any sample runs."""
    from wizardcoder.score.intervals import headline

    files = sorted(Path(samples_dir).glob("*.jsonl"))
    if not files:
        raise DataError(samples_dir, None, None, "no <benchmark>.jsonl samples files")
    sets = {}
    for path in files:
        name, problems, rows = load_set(str(path), None, None, sanitize)
        if name != path.stem:
            raise DataError(path, 1, "benchmark", f"{name!r} in a file named {path.name}")
        sets[name] = (problems, rows)
    sandbox = SandboxSession.from_config(config)
    isolation = sandbox.check_isolation()
    summaries, heads, timings, outputs = {}, {}, {}, {}
    with stage_run("score", {"score": to_dict(config)}, tags={"benchmark": ",".join(sets)},
                   nested=nested) as run_:
        run_.set_tags({f"sandbox.{k}": str(v) for k, v in isolation.items()})
        for name, (problems, rows) in sets.items():
            summary, outputs[name], timings[name] = score_set(
                "score", config, sandbox, name, problems, rows, isolation, run_)
            summaries[name] = summary
            heads[name] = headline(summary, outputs[name], with_benchmark=False)
            run_.log_metrics({f"{name}.{k}": v for k, v in {**summary, **timings[name]}.items()
                              if isinstance(v, int | float) and not isinstance(v, bool)})
        out = Path(results_dir)
        out.mkdir(parents=True, exist_ok=True)
        for stale in set(out.glob("*.jsonl")) - {out / f"{n}.jsonl" for n in sets}:
            stale.unlink()
        for name, result_rows in outputs.items():
            write_jsonl(out / f"{name}.jsonl", result_rows)
        write_metrics(metrics, summaries, heads, details)
        if facts:
            write_json(facts, timings)
    log.info("score: %s", json.dumps(heads))
    return summaries


# Per-sample fields that depend on when and how fast the sandbox ran: not in the results file
# (an output: identical inputs must give identical bytes), summed up in the run facts.
RUN_DEPENDENT_FIELDS = ("duration_s",)


def result_row(verdict) -> dict:
    """A results-file row: the verdict without its run time."""
    return {k: v for k, v in asdict(verdict).items() if k not in RUN_DEPENDENT_FIELDS}


def run_facts(verdicts: list) -> dict:
    """How long the samples ran (sandbox wall time), for the run-facts file and MLflow."""
    times = [v.duration_s for v in verdicts]
    slowest = max(verdicts, key=lambda v: v.duration_s, default=None)
    return {"samples": len(verdicts), "sandbox_s_total": round(sum(times), 3),
            "sandbox_s_max": round(max(times, default=0.0), 3),
            "slowest_task": slowest.task_id if slowest else None}


def score_and_write(stage: str, config: ScoreConfig, name: str, problems: dict,
                    rows: list[dict], metrics: str, results: str, *, nested: bool = True,
                    run_name: str | None = None, facts: str | None = None,
                    details: str | None = None, headline_prefix: str = "") -> dict:
    """Run ``rows`` in the sandbox, then write the per-sample results and the metrics JSON;
    logs to the stage's MLflow run (``nested``: under the pipeline's parent run). Run times
    go to ``facts`` (the stage's run-facts file, not compared; None: MLflow only). With
    ``details`` (the DVC stages) ``metrics`` gets the headline only (pass@k with its bounds,
    keys prefixed by ``headline_prefix``: :func:`~wizardcoder.score.intervals.headline`) and
    ``details`` the whole summary (per-verdict counts, isolation layers)."""
    from wizardcoder.score.intervals import headline

    sandbox = SandboxSession.from_config(config)
    # Before any sample: strict refuses (ExternalError) when a layer is missing.
    isolation = sandbox.check_isolation()
    with stage_run(stage, {"score": to_dict(config)}, tags={"benchmark": name},
                   nested=nested, run_name=run_name) as run_:
        run_.set_tags({f"sandbox.{k}": str(v) for k, v in isolation.items()})
        summary, result_rows, timing = score_set(stage, config, sandbox, name, problems,
                                                 rows, isolation, run_)
        write_jsonl(results, result_rows)
        write_metrics(metrics, summary, headline(summary, result_rows, headline_prefix),
                      details)
        if facts:
            write_json(facts, timing)
        run_.log_metrics({k: v for k, v in {**summary, **timing}.items()
                          if isinstance(v, int | float)})
    log.info("%s: %s", stage, json.dumps(summary))
    return summary


def score_set(stage: str, config: ScoreConfig, sandbox: SandboxSession, name: str,
              problems: dict, rows: list[dict], isolation: dict,
              run_) -> tuple[dict, list[dict], dict]:
    """(summary, results rows, run facts) of one benchmark's rows, judged by its registered
    scorer (:mod:`wizardcoder.score.scorers`); ExternalError past the sandbox-error budget."""
    from wizardcoder.sandbox.harness import kinds_summary
    from wizardcoder.score.passk import pass_at_k_summary
    from wizardcoder.score.scorers import score_rows

    verdicts = score_rows(name, problems, rows, sandbox.limits, config)
    summary = {"benchmark": name, **pass_at_k_summary(verdicts, config.ks),
               "kinds": kinds_summary(verdicts), "isolation": isolation}
    summary["sandbox_errors"] = summary["kinds"]["sandbox_error"]
    if any(v.plus_kind is not None for v in verdicts):
        summary["plus_kinds"] = kinds_summary(
            [dataclasses.replace(v, kind=v.plus_kind) for v in verdicts])
        summary["plus_sandbox_errors"] = summary["plus_kinds"]["sandbox_error"]
    check_sandbox_errors(stage, verdicts, sandbox, run_)
    return summary, [result_row(v) for v in verdicts], run_facts(verdicts)


def check_sandbox_errors(stage: str, verdicts: list, sandbox: SandboxSession,
                         run_=None) -> None:
    """ExternalError (nothing written) when more samples than score.max_sandbox_errors got a
    ``sandbox_error`` in their base or plus tests: a broken sandbox says nothing about the
    model, and reporting pass@k over what is left would hide it. The counts still reach the
    MLflow run."""
    def refusal(bad: list) -> str:
        base = sum(v.kind == "sandbox_error" for v in verdicts)
        plus = sum(getattr(v, "plus_kind", None) == "sandbox_error" for v in verdicts)
        if run_ is not None:
            run_.log_metrics({"sandbox_errors": base, "plus_sandbox_errors": plus})
        first = bad[0]
        detail = first.detail if first.kind == "sandbox_error" else first.plus_detail
        return (f"{stage}: {len(bad)} of {len(verdicts)} samples got a sandbox error (base "
                f"tests: {base}, plus tests: {plus}), more than score.max_sandbox_errors="
                f"{sandbox.max_sandbox_errors}; nothing written. First: {first.task_id} "
                f"sample {first.sample_index}: {detail}")

    sandbox.charge(verdicts, refusal)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", default="data/eval/samples",
                   help="a samples JSONL file, or the generate stage's directory of "
                        "<benchmark>.jsonl files (default: %(default)s)")
    from wizardcoder.benchmarks.problems import BENCHMARKS

    p.add_argument("--benchmark", default=None, choices=list(BENCHMARKS),
                   help="benchmark of the samples (default: from the file's header, else "
                        "for Mbpp/ task ids mbpp when they cover more than MBPP+'s 378 tasks "
                        "and mbpp+ otherwise, else humaneval)")
    p.add_argument("--metrics", default=None,
                   help="metrics JSON (default: next to the samples file, SAMPLES.score.json;"
                        " the pipeline's stage writes metrics/score.json)")
    p.add_argument("--results", default=None,
                   help="per-sample verdicts, base and plus (default: next to the samples "
                        "file, SAMPLES.results.jsonl)")
    p.add_argument("--run-facts", default=None, metavar="JSON",
                   help="also write the run times (sandbox seconds) here; they are not in "
                        "the results file, whose bytes depend on the inputs only")
    p.add_argument("--details", default=None, metavar="JSON",
                   help="write every count (per verdict, isolation layers) here and only the "
                        "headline (pass@k and its 95%% bounds) to --metrics; default: all of "
                        "it in --metrics")
    p.add_argument("--pipeline-stage", action="store_true",
                   help=argparse.SUPPRESS)  # stages/score.py: log under the pipeline's run
    p.add_argument("--isolation", default=None, choices=ISOLATION_MODES,
                   help="overrides score.isolation: strict refuses to score when a sandbox "
                        "layer is unavailable; best_effort scores and records the layers")
    p.add_argument("--tasks", default=None, metavar="ID,ID,...",
                   type=lambda text: [t.strip() for t in text.split(",") if t.strip()],
                   help="score only these tasks (each needs a sample); default: every task "
                        "of the benchmark, or of the file header's task_ids")
    p.add_argument("--sanitize", action="store_true",
                   help="treat every row as a raw chat response (its `raw`/`response`, else "
                        "`solution`/`completion`): extract the code as generate does; rows "
                        "with only `raw`/`response` are sanitized anyway")


def command(args: argparse.Namespace) -> None:
    # External samples are often scored outside a checkout: no params.yaml, defaults.
    params = None if args.params == "params.yaml" and not os.path.exists(args.params) \
        else args.params
    run(params, args.samples, args.metrics, args.results, args.benchmark, args.tasks,
        args.sanitize, isolation=args.isolation, pipeline_stage=args.pipeline_stage,
        facts=args.run_facts, details=args.details)


def main(argv: list[str] | None = None) -> int:
    """``python -m stages.score``: the pipeline's stage, logged under the pipeline's MLflow
    parent run (external samples scored with ``wizardcoder score`` get a run of their own)."""
    def pipeline_arguments(p: argparse.ArgumentParser) -> None:
        add_arguments(p)
        p.set_defaults(pipeline_stage=True)

    return stage_main("score", __doc__, pipeline_arguments, command, argv)
