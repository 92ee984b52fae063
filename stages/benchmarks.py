"""Stage `benchmarks` as DVC runs it (see dvc.yaml); options: `python -m stages.benchmarks --help`.
The code: wizardcoder/benchmarks/stage.py."""

import sys

from wizardcoder.benchmarks.stage import main

if __name__ == "__main__":
    sys.exit(main())
