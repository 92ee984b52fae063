"""DVC entry point of the `seed` stage (see dvc.yaml); the same as `wizardcoder seed`.

    python -m stages.seed [options]    # options: python -m stages.seed --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["seed", *sys.argv[1:]]))
