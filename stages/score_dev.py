"""Stage `score_dev` as DVC runs it (see dvc.yaml); options: `python -m stages.score_dev --help`.
The code: wizardcoder/experiments/dev.py."""

import sys

from wizardcoder.experiments.dev import score_dev_main

if __name__ == "__main__":
    sys.exit(score_dev_main())
