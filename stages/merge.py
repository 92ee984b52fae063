"""DVC entry point of the `merge` stage (see dvc.yaml); the same as `wizardcoder merge`.

    python -m stages.merge [options]    # options: python -m stages.merge --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["merge", *sys.argv[1:]]))
