"""Stage `score_dev` as DVC runs it (dvc.yaml): `python -m stages.score_dev --help` lists
the options. The code: wizardcoder/experiments/dev.py."""

import sys

from wizardcoder.experiments.dev import score_dev_main

if __name__ == "__main__":
    sys.exit(score_dev_main())
