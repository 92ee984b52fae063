"""DVC entry point of the `score` stage (see dvc.yaml); the same as `wizardcoder score`.

    python -m stages.score [options]    # options: python -m stages.score --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
