"""DVC entry point of the `train` stage (see dvc.yaml); the same as `wizardcoder train`.

    python -m stages.train [options]    # options: python -m stages.train --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
