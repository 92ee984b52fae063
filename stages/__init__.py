"""The one-line entry points DVC runs (`python -m stages.X`); the code is in wizardcoder/X/."""
