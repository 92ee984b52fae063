"""Stage `evolve` as DVC runs it (dvc.yaml): `python -m stages.evolve --help` lists the options.
The code: wizardcoder/evolve/stage.py."""

import sys

from wizardcoder.evolve.stage import main

if __name__ == "__main__":
    sys.exit(main())
