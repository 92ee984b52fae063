"""Stage `generate` as DVC runs it (see dvc.yaml); options: `python -m stages.generate --help`.
The code: wizardcoder/generate/stage.py."""

import sys

from wizardcoder.generate.stage import main

if __name__ == "__main__":
    sys.exit(main())
