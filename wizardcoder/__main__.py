"""`python -m wizardcoder ...` is the same as the `wizardcoder` command."""

import sys

from wizardcoder.cli import main

sys.exit(main())
