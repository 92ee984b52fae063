"""Stage `merge` as DVC runs it (dvc.yaml): `python -m stages.merge --help` lists the options.
The code: wizardcoder/merge/stage.py."""

import sys

from wizardcoder.merge.stage import main

if __name__ == "__main__":
    sys.exit(main())
