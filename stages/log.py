"""Stage `log` as DVC runs it (dvc.yaml): `python -m stages.log --help` lists the options.
The code: wizardcoder/log/stage.py."""

import sys

from wizardcoder.log.stage import main

if __name__ == "__main__":
    sys.exit(main())
