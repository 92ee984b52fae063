"""Stage `seed` as DVC runs it (see dvc.yaml); options: `python -m stages.seed --help`.
The code: wizardcoder/seed/stage.py."""

import sys

from wizardcoder.seed.stage import main

if __name__ == "__main__":
    sys.exit(main())
