"""Stage `generate` as DVC runs it (dvc.yaml): `python -m stages.generate --help` lists the options.
The code: wizardcoder/generate/stage.py."""

import sys

from wizardcoder.generate.stage import main

if __name__ == "__main__":
    sys.exit(main())
