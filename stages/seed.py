"""Stage `seed` as DVC runs it (dvc.yaml): `python -m stages.seed --help` lists the options.
The code: wizardcoder/seed/stage.py."""

import sys

from wizardcoder.seed.stage import main

if __name__ == "__main__":
    sys.exit(main())
