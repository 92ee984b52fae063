"""DVC entry point of the `evolve` stage (see dvc.yaml); the same as `wizardcoder evolve`.

    python -m stages.evolve [options]    # options: python -m stages.evolve --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["evolve", *sys.argv[1:]]))
