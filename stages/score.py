"""Stage `score` as DVC runs it (see dvc.yaml); options: `python -m stages.score --help`.
The code: wizardcoder/score/stage.py."""

import sys

from wizardcoder.score.stage import main

if __name__ == "__main__":
    sys.exit(main())
