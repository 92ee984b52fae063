"""params.yaml section `tracking`, read by the `log` stage: what goes to MLflow beyond the
metrics and params."""

from __future__ import annotations

from dataclasses import dataclass

from wizardcoder.config import option


@dataclass
class TrackingConfig:
    """params.yaml section `tracking` (the log stage: what goes to MLflow besides metrics)."""

    log_model: bool = option(
        True, help="Log the fine-tuned model as an MLflow pyfunc model on the experiment's "
                   "parent run (its weights copied once per model content; every experiment "
                   "that trained the same weights links to that copy).")
    register_model: str | None = option(
        "wizardcoder", help="Register each experiment's model in the MLflow model registry "
                            "under this name: one version per experiment and model content, "
                            "tagged dvc_exp_name, git_revision and dvc_md5 "
                            "(`mlflow.pyfunc.load_model('models:/NAME/1')` loads one); null: "
                            "do not register.")
