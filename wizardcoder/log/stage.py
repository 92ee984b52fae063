"""Stage `log`: the whole experiment on its MLflow parent run, after every `dvc repro`.

    python -m stages.log --rounds-plot metrics/score.json metrics/passk_rounds.json \
        --rounds-plot metrics/dev_score.json metrics/dev_passk_rounds.json

A stage that DVC restores from its run-cache runs no code, so it logs nothing: an experiment
made only of restored stages would have a parent run without params or pass@1. This stage is
cheap and always runs: on the parent it logs every params.yaml key, the numbers of the files
dvc.yaml declares as metrics (the headline), the DVC hash of every stage output (dvc.lock),
the git commit, the training data and the benchmark as MLflow datasets (digest = DVC hash),
and the fine-tuned model: logged once per model content and linked to every experiment that
trained it, registered as one version per experiment (``tracking.register_model``). When
nothing changed since it last filled the parent (same dvc.lock hashes), it adds nothing.

It also writes this experiment's point of the pass@k-vs-rounds plot: that point needs the
round count and the baseline, which the score stages do not read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import yaml

from wizardcoder import tracking
from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.errors import DataError
from wizardcoder.jsonl import write_json
from wizardcoder.log.config import TrackingConfig
from wizardcoder.mlflow_store import at_store, quiet_mlflow

log = logging.getLogger(__name__)

MODEL_DIGEST_TAG = "dvc_md5"  # on logged models and versions: the DVC hash of the model dir


def lock_outputs(lock_path: str | Path, skip_stages: tuple[str, ...] = ()) -> dict[str, str]:
    """{output path: DVC hash} of every stage in dvc.lock but ``skip_stages``."""
    path = Path(lock_path)
    if not path.is_file():
        return {}
    try:
        lock = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DataError(path, None, None, f"not valid YAML: {exc}") from None
    hashes = {}
    for name, stage in (lock.get("stages") or {}).items():
        if name in skip_stages:
            continue
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


def declared_metrics(root: str | Path = ".") -> list[str]:
    """The files dvc.yaml declares as ``metrics:`` (foreach stages expanded), as DVC reads
    them: what experiments are compared on, wherever the details went."""
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return sorted({str(out.def_path) for stage in repo.index.stages
                           for out in stage.outs if out.metric})
    except Exception as exc:  # DVC's own errors, or its crash on a malformed dvc.lock
        raise DataError(Path(root, "dvc.yaml"), None, None,
                        f"DVC cannot read the declared metrics: {exc}") from None


def headline_metrics(paths: list[str]) -> dict[str, float]:
    """Every number of these metrics files, named ``<group>/<key>``
    (metrics/evolve/r1.json's ``kept`` -> ``evolve/r1/kept``, metrics/score.json's
    ``pass@1`` -> ``benchmark/pass_at_1``); files not written yet are skipped."""
    out: dict[str, float] = {}
    for name in paths:
        path = Path(name)
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(path, None, None, f"not valid JSON: {exc}") from None
        if isinstance(data, dict):
            out.update(tracking.numeric_metrics(data, tracking.metric_group(name)))
    return out


def results_files(results: str) -> list[Path]:
    """The scored samples: ``<benchmark>.jsonl`` files of a results directory, or one file."""
    path = Path(results)
    return sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.is_file() else []


def outputs_digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def _dataset(path: str, digest: str, name: str):
    """An MLflow dataset of a file of the checkout, its source the path relative to it."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset

    with quiet_mlflow():  # "can be interpreted in multiple ways": both are local
        source = mlflow.data.dataset_source_registry.resolve_dataset_source(path)
    return MetaDataset(source=source, name=name, digest=digest[:36])


def _logged_model(mlflow, model_dir: str, digest: str) -> str:
    """The id of the logged model with these weights, logging it (on the active run) unless
    one with this DVC hash exists: the weights are copied once per content."""
    import torch
    import transformers
    from mlflow.models import infer_signature

    from wizardcoder.prompt_template import ALPACA_TEMPLATE

    experiment_id = mlflow.active_run().info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"tags.{MODEL_DIGEST_TAG} = '{digest}'",
        output_format="list", max_results=1)
    if found:
        return found[0].model_id
    with at_store(), quiet_mlflow():
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(Path(__file__).with_name("mlflow_model.py")),
            artifacts={"model_dir": str(Path(model_dir).resolve())},
            model_config={"prompt_template": ALPACA_TEMPLATE},
            signature=infer_signature(["Write a function."], ["def f(): ..."],
                                      params={"max_new_tokens": 256}),
            # Explicit: inferring them would load the model in a subprocess.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                              f"transformers=={transformers.__version__}"],
            tags={MODEL_DIGEST_TAG: digest, "mlflow.source.name": "stages/log.py"})
    return info.model_id


def register_version(client, name: str, model_id: str, parent, digest: str) -> str:
    """This experiment's version of the registered model ``name`` (created unless a version
    with the same experiment, revision and weights exists); returns its number."""
    from mlflow.exceptions import MlflowException

    tags = {"dvc_exp_name": parent.data.tags.get("dvc_exp_name", ""),
            "git_revision": parent.data.tags.get("git_revision", ""), MODEL_DIGEST_TAG: digest}
    try:
        client.create_registered_model(name)
    except MlflowException:  # it exists
        pass
    for version in client.search_model_versions(f"name = '{name}'"):
        if all(version.tags.get(k) == v for k, v in tags.items()):
            return version.version
    with at_store():
        version = client.create_model_version(name, f"models:/{model_id}",
                                              run_id=parent.info.run_id, tags=tags,
                                              model_id=model_id)
    return version.version


def _log_model(mlflow, config: TrackingConfig, model_dir: str, digest: str,
               parent_id: str) -> str:
    """The model on the parent run (and in the registry); returns its URI."""
    from mlflow.entities import LoggedModelOutput

    client = mlflow.MlflowClient()
    # Logged from the log stage's run: log_model() puts model_config (the prompt template)
    # in the active run's params, which on the parent would differ between experiments
    # that logged the weights and experiments that reuse them.
    model_id = _logged_model(mlflow, model_dir, digest)
    parent = client.get_run(parent_id)
    linked = {m.model_id for m in (parent.outputs.model_outputs if parent.outputs else [])}
    if model_id not in linked:  # linked to every experiment that trained these weights
        client.log_outputs(parent_id, [LoggedModelOutput(model_id, 0)])
    if config.register_model:
        number = register_version(client, config.register_model, model_id, parent, digest)
        return f"models:/{config.register_model}/{number}"
    return f"models:/{model_id}"


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
    """{score metrics JSON: plot JSON}: one point per scored set that exists; a metrics file
    with an entry per benchmark (metrics/score.json) gives a point per benchmark, named by
    its ``benchmark`` field."""
    point = rounds_point(params)
    for metrics_path, plot_path in plots.items():
        if Path(metrics_path).is_file():
            summary = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
            # an entry per benchmark is named by its key (score.json has no benchmark field)
            sets = {k: v for k, v in summary.items() if isinstance(v, dict)
                    and any("pass@" in key for key in v)} or {None: summary}
            write_json(plot_path, [
                {**point, **({"benchmark": s.get("benchmark", name)} if name else {}),
                 **{k.replace("@", "_at_"): v for k, v in s.items()
                    if "pass@" in k and isinstance(v, int | float)}} for name, s in sets.items()])


def run(params: str, lock: str, train_data: str, model_dir: str, benchmark_results: str,
        rounds_plots: dict[str, str]) -> dict[str, Any]:
    config = load_section(params, "tracking", TrackingConfig)
    write_rounds_points(params, rounds_plots)
    hashes = lock_outputs(lock, skip_stages=("log",))
    numbers = headline_metrics(declared_metrics())
    summary: dict[str, Any] = {"metrics": len(numbers), "outputs": len(hashes), "model": None,
                               "parent": None}
    outputs = outputs_digest(hashes)
    parent = tracking.find_parent(params, outputs=outputs)
    if (parent is not None and parent.info.status == "FINISHED"
            and parent.data.tags.get(tracking.OUTS_DIGEST_TAG) == outputs):
        log.info("log: nothing changed since MLflow run %s (%s): no run added",
                 parent.info.run_name, parent.info.run_id)
        summary["parent"] = parent.info.run_id
        return summary
    with tracking.stage_run("log", {"tracking": to_dict(config)}, params_path=params) as run_:
        if not run_.active:
            return summary
        mlflow = run_.mlflow
        hash_tags = {f"dvc.{path}": digest for path, digest in hashes.items()}
        if run_.parent_id is None:  # by hand: on a run of its own, no model
            mlflow.log_metrics(numbers)
            run_.set_tags(hash_tags)
            return summary
        parent = summary["parent"] = run_.parent_id
        client = mlflow.MlflowClient()
        already = client.get_run(parent).data.params
        missing = {k: v for k, v in tracking.experiment_params(Path(params)).items()
                   if k not in already}
        run_.log_to_parent(metrics=numbers, params=missing, tags=hash_tags)
        datasets = []
        if digest := output_digest(train_data, hashes):
            datasets.append((_dataset(train_data, digest, "train"), "training"))
        for path in results_files(benchmark_results):  # one per benchmark: evaluation
            if digest := output_digest(str(path), hashes):
                datasets.append((_dataset(str(path), digest, path.stem), "evaluation"))
        for dataset, context in datasets:
            with mlflow.start_run(run_id=parent, nested=True):
                mlflow.log_input(dataset, context=context)
        if config.log_model and model_dir in hashes:
            summary["model"] = _log_model(mlflow, config, model_dir, hashes[model_dir], parent)
        # Last: a parent that has it got everything above.
        run_.log_to_parent(tags={tracking.OUTS_DIGEST_TAG: outputs})
    log.info("log: %d metrics and %d output hashes on MLflow run %s%s", len(numbers),
             len(hashes), parent, f"; model {summary['model']}" if summary["model"] else "")
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock", default="dvc.lock")
    p.add_argument("--train-data", default="data/merged/train.jsonl")
    p.add_argument("--model", default="models/sft")
    p.add_argument("--results", default="data/eval/results",
                   help="the score stage's per-sample results, <benchmark>.jsonl each: one "
                        "MLflow evaluation dataset per benchmark (digest: the file's DVC md5)")
    p.add_argument("--rounds-plot", nargs=2, action="append", default=[],
                   metavar=("SCORE_JSON", "PLOT_JSON"),
                   help="write this experiment's pass@k-vs-rounds point from a score "
                        "metrics file (repeatable)")


def command(args: argparse.Namespace) -> None:
    run(args.params, args.lock, args.train_data, args.model, args.results,
        dict(args.rounds_plot))


def main(argv: list[str] | None = None) -> int:
    return stage_main("log", __doc__, add_arguments, command, argv)
