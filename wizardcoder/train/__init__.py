"""Supervised fine-tuning (WizardCoder recipe): data encoding, model loading, the Trainer run.

Heavy imports (torch, transformers) happen inside functions, so importing this package
for its config costs nothing.
"""

from wizardcoder.train.config import SECTION, TrainConfig, resolve_precision
from wizardcoder.train.launch import maybe_relaunch
from wizardcoder.train.trainer import run_training

__all__ = ["SECTION", "TrainConfig", "maybe_relaunch", "resolve_precision", "run_training"]
