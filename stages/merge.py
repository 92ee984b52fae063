"""Stage `merge` as DVC runs it (see dvc.yaml); options: `python -m stages.merge --help`.
The code: wizardcoder/merge/stage.py."""

import sys

from wizardcoder.merge.stage import main

if __name__ == "__main__":
    sys.exit(main())
