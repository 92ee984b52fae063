"""params.yaml section `tracking`, read by the `log` stage: what goes to MLflow beyond the
metrics and params."""

from __future__ import annotations

from dataclasses import dataclass

from wizardcoder.config import option


@dataclass
class TrackingConfig:
    """params.yaml section `tracking` (the log stage: what goes to MLflow besides metrics)."""

    log_model: bool = option(
        True, help="Log the fine-tuned model as an MLflow pyfunc model (copied once per "
                   "model content; `mlflow.pyfunc.load_model('models:/NAME/1')` loads it).")
    register_model: str | None = option(
        None, help="Also register it in the MLflow model registry under this name (null: "
                   "do not register).")
