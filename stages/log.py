"""DVC entry point of the `log` stage (see dvc.yaml); the same as `wizardcoder log`.

    python -m stages.log [options]    # options: python -m stages.log --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["log", *sys.argv[1:]]))
