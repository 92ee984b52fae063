"""wizardcoder: a data-versioned reproduction of WizardCoder (Code Evol-Instruct + SFT + pass@k)."""

__version__ = "0.1.0"
