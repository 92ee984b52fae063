"""Stage `score` as DVC runs it (dvc.yaml): `python -m stages.score --help` lists the options.
The code: wizardcoder/score/stage.py."""

import sys

from wizardcoder.score.stage import main

if __name__ == "__main__":
    sys.exit(main())
