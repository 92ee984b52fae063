"""Supervised fine-tuning (WizardCoder recipe): data encoding, model loading, the Trainer run.

Heavy imports (torch, transformers) happen inside functions, so importing this package
for its config costs nothing.
"""

from wizardcoder.training.config import SECTION, TrainConfig, resolve_precision
from wizardcoder.training.launch import maybe_relaunch
from wizardcoder.training.trainer import run_training

__all__ = ["SECTION", "TrainConfig", "maybe_relaunch", "resolve_precision", "run_training"]
