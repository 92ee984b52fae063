"""DVC entry point of the `score` stage (see dvc.yaml): `wizardcoder score`, logged under the
pipeline's MLflow parent run (external samples scored by hand get a run of their own).

    python -m stages.score [options]    # options: python -m stages.score --help
"""

import sys

from wizardcoder.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", "--pipeline-stage", *sys.argv[1:]]))
