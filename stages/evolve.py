"""Stage `evolve` as DVC runs it (see dvc.yaml); options: `python -m stages.evolve --help`.
The code: wizardcoder/evolve/stage.py."""

import sys

from wizardcoder.evolve.stage import main

if __name__ == "__main__":
    sys.exit(main())
