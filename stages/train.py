"""Stage `train` as DVC runs it (see dvc.yaml); options: `python -m stages.train --help`.
The code: wizardcoder/train/stage.py."""

import sys

from wizardcoder.train.stage import main

if __name__ == "__main__":
    sys.exit(main())
