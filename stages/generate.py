"""DVC entry point of the `generate` stage (see dvc.yaml); the same as `wizardcoder generate`.

    python -m stages.generate [options]    # options: python -m stages.generate --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
