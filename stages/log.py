"""Stage `log` as DVC runs it (see dvc.yaml); options: `python -m stages.log --help`.
The code: wizardcoder/log/stage.py."""

import sys

from wizardcoder.log.stage import main

if __name__ == "__main__":
    sys.exit(main())
