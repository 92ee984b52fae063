"""Stage `log`: the whole experiment on its MLflow parent run, after every `dvc repro`.

    python -m stages.log --rounds-plot metrics/score.json metrics/passk_rounds.json \
        --rounds-plot metrics/dev_score.json metrics/dev_passk_rounds.json

A stage that DVC restores from its run-cache runs no code, so it logs nothing: an experiment
made only of restored stages would have a parent run without pass@1, which MLflow filters then
silently drop. This stage is cheap and always runs: it logs on the parent every metrics file,
the DVC hash of every stage output (dvc.lock), the experiment's params, the git commit, the
training data and the benchmark as MLflow datasets (digest = DVC hash), and the fine-tuned
model as an MLflow model (registered under ``tracking.register_model`` when set), copied once
per model content: a rerun with the same weights logs a reference, not another copy.

It also writes this experiment's point of the pass@k-vs-rounds plot: that point needs the
round count and the baseline, which the score stages do not read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import yaml

from wizardcoder.config import flatten, load_section, read_params, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.errors import DataError
from wizardcoder.jsonl import write_json
from wizardcoder.log.config import TrackingConfig
from wizardcoder.tracking import metric_name, redact, stage_run

log = logging.getLogger(__name__)

MODEL_DIGEST_TAG = "dvc_md5"  # on logged models: the DVC hash of the model directory


def lock_outputs(lock_path: str | Path) -> dict[str, str]:
    """{output path: DVC hash} of every stage in dvc.lock."""
    path = Path(lock_path)
    if not path.is_file():
        return {}
    try:
        lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(path, None, None, f"not valid YAML: {exc}") from None
    hashes = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or ():
            digest = out.get("md5") or out.get("hash") or out.get("etag")
            if out.get("path") and digest:
                hashes[out["path"]] = str(digest)
    return dict(sorted(hashes.items()))


def output_digest(path: str, hashes: dict[str, str]) -> str | None:
    """The DVC hash of ``path``: its own entry in dvc.lock, or (a file inside an output
    directory) the md5 of its bytes, which is how DVC hashes a file."""
    if path in hashes:
        return hashes[path]
    if any(Path(out) in Path(path).parents for out in hashes) and Path(path).is_file():
        digest = hashlib.md5()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
        return digest.hexdigest()
    return None


def metrics_files(metrics_dir: str | Path) -> dict[str, float]:
    """Every number of every metrics JSON object under ``metrics_dir``, named by its file:
    metrics/evolve/r1.json's ``kept`` -> ``evolve.r1.kept``. JSON lists (plot data) are
    skipped: they are drawn by `dvc plots`, not single numbers."""
    root = Path(metrics_dir)
    out: dict[str, float] = {}
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(path, None, None, f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            continue
        prefix = ".".join(path.relative_to(root).with_suffix("").parts)
        for key, value in flatten(data).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[metric_name(f"{prefix}.{key}")] = float(value)
    return out


def _score_headline(metrics_dir: Path) -> dict[str, float]:
    """pass@k of metrics/score.json unprefixed (pass_at_1), as the score stage logs it."""
    path = metrics_dir / "score.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {metric_name(k): float(v) for k, v in data.items()
            if "pass@" in k and isinstance(v, int | float)}


def _dataset(mlflow, path: str, digest: str, name: str):
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local
        warnings.simplefilter("ignore", UserWarning)
        source = mlflow.data.dataset_source_registry.resolve_dataset_source(
            str(Path(path).resolve()))
    return MetaDataset(source=source, name=name, digest=digest[:36])


def _log_model(mlflow, config: TrackingConfig, model_dir: str, digest: str) -> str | None:
    """Log the model unless a model with this DVC hash is already logged; returns its URI."""
    import torch
    import transformers
    from mlflow.models import infer_signature

    from wizardcoder.prompt_template import ALPACA_TEMPLATE

    experiment_id = mlflow.active_run().info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"tags.{MODEL_DIGEST_TAG} = '{digest}'",
        output_format="list", max_results=1)
    if found:  # the same weights: no second copy of them
        uri = found[0].model_uri
        log.info("log: model %s is already logged as %s", digest, uri)
    else:
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"model_dir": str(Path(model_dir).resolve())},
            model_config={"prompt_template": ALPACA_TEMPLATE},
            signature=infer_signature(["Write a function."], ["def f(): ..."],
                                      params={"max_new_tokens": 256}),
            # Explicit: inferring them would load the model in a subprocess.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"transformers=={transformers.__version__}"],
            tags={MODEL_DIGEST_TAG: digest})
        uri = info.model_uri
    if config.register_model:  # one version per model content, not one per `dvc repro`
        versions = mlflow.MlflowClient().search_model_versions(
            f"name = '{config.register_model}'")
        if not any(v.tags.get(MODEL_DIGEST_TAG) == digest for v in versions):
            mlflow.register_model(uri, config.register_model, tags={MODEL_DIGEST_TAG: digest})
    return uri


def rounds_point(params: str | Path) -> dict:
    """What this experiment trained on, for the x axis of the pass@k-vs-rounds plot.

    ``rounds`` counts the evolution rounds in the training data: 0 for the seed-only
    baseline; the equal-size baseline keeps the round count it matches, and
    ``training_data`` tells the three apart (``evolved``, ``seed_only``, ``equal_size``).
    """
    from wizardcoder.merge.config import MergeConfig
    from wizardcoder.rounds import load_rounds

    rounds = load_rounds(str(params))
    baseline = load_section(params, "merge", MergeConfig).baseline
    return {"rounds": 0 if baseline == "seed_only" else len(rounds),
            "training_data": "evolved" if baseline == "none" else baseline}


def write_rounds_points(params: str | Path, plots: dict[str, str]) -> None:
    """{score metrics JSON: plot JSON}: one point per scored set that exists."""
    point = rounds_point(params)
    for metrics_path, plot_path in plots.items():
        if Path(metrics_path).is_file():
            summary = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
            fields = {k.replace("@", "_at_"): v for k, v in summary.items()
                      if "pass@" in k and isinstance(v, int | float)}
            write_json(plot_path, [{**point, **fields}])


def run(params: str, lock: str, metrics_dir: str, train_data: str, model_dir: str,
        benchmark_results: str, rounds_plots: dict[str, str]) -> dict[str, Any]:
    config = load_section(params, "tracking", TrackingConfig)
    write_rounds_points(params, rounds_plots)
    hashes = lock_outputs(lock)
    numbers = {**metrics_files(metrics_dir), **_score_headline(Path(metrics_dir))}
    summary: dict[str, Any] = {"metrics": len(numbers), "outputs": len(hashes), "model": None}
    with stage_run("log", {"tracking": to_dict(config)}) as run_:
        if not run_.active:
            return summary
        mlflow = run_.mlflow
        parent = run_.parent_id
        client = mlflow.MlflowClient()
        parent_run = client.get_run(parent)
        already = set(parent_run.data.params)
        params_flat = {k: v for k, v in redact(read_params(params)).items() if k not in already}
        run_.log_to_parent(metrics=numbers, params=params_flat, tags={
            **{f"dvc.{path}": digest for path, digest in hashes.items()},
            "mlflow.source.git.commit": run_.git_commit})
        run_.log_metrics(numbers)
        datasets = []
        if digest := output_digest(train_data, hashes):
            datasets.append((_dataset(mlflow, train_data, digest, "train"), "training"))
        score_file = Path(metrics_dir, "score.json")
        if (digest := output_digest(benchmark_results, hashes)) and score_file.is_file():
            bench = json.loads(score_file.read_text(encoding="utf-8")).get("benchmark", "eval")
            datasets.append((_dataset(mlflow, benchmark_results, digest, bench), "evaluation"))
        for dataset, context in datasets:
            with mlflow.start_run(run_id=parent, nested=True):
                mlflow.log_input(dataset, context=context)
        if config.log_model and model_dir in hashes:
            with mlflow.start_run(run_id=parent, nested=True):
                summary["model"] = _log_model(mlflow, config, model_dir, hashes[model_dir])
    log.info("log: %d metrics and %d output hashes on the parent run%s", len(numbers),
             len(hashes), f"; model {summary['model']}" if summary["model"] else "")
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock", default="dvc.lock")
    p.add_argument("--metrics-dir", default="metrics")
    p.add_argument("--train-data", default="data/merged/train.jsonl")
    p.add_argument("--model", default="models/sft")
    p.add_argument("--results", default="data/eval/results.jsonl",
                   help="the scored benchmark's per-sample results (its DVC hash: the "
                        "evaluation dataset's digest)")
    p.add_argument("--rounds-plot", nargs=2, action="append", default=[],
                   metavar=("SCORE_JSON", "PLOT_JSON"),
                   help="write this experiment's pass@k-vs-rounds point from a score "
                        "metrics file (repeatable)")


def command(args: argparse.Namespace) -> None:
    run(args.params, args.lock, args.metrics_dir, args.train_data, args.model, args.results,
        dict(args.rounds_plot))


def main(argv: list[str] | None = None) -> int:
    return stage_main("log", __doc__, add_arguments, command, argv)
