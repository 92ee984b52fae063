"""Stage `train` as DVC runs it (dvc.yaml): `python -m stages.train --help` lists the options.
The code: wizardcoder/train/stage.py."""

import sys

from wizardcoder.train.stage import main

if __name__ == "__main__":
    sys.exit(main())
