"""Stage `benchmarks` as DVC runs it (dvc.yaml): `python -m stages.benchmarks --help` lists
the options. The code: wizardcoder/benchmarks/stage.py."""

import sys

from wizardcoder.benchmarks.stage import main

if __name__ == "__main__":
    sys.exit(main())
