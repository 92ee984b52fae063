"""Stage `generate_dev` as DVC runs it (see dvc.yaml); options:
`python -m stages.generate_dev --help`. The code: wizardcoder/experiments/dev.py."""

import sys

from wizardcoder.experiments.dev import generate_dev_main

if __name__ == "__main__":
    sys.exit(generate_dev_main())
