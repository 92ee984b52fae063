"""How every command runs, whether DVC starts it (``python -m stages.X``) or a user does
(``wizardcoder X``): one parser shape, one log format, one exit-code rule.

Errors in input or configuration (:class:`~wizardcoder.errors.WizardcoderError`) print one
line naming the file, line and field and exit with its status (2 for bad input); Ctrl-C
exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from wizardcoder.errors import WizardcoderError

# Third-party chatter (HTTP request lines, MLflow banners) drowns the stage's own log.
NOISY_LOGGERS = ("httpx", "httpx2", "urllib3", "mlflow", "alembic", "filelock")


def common_parser() -> argparse.ArgumentParser:
    """--params and -v, shared by every stage and helper command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--params", default="params.yaml",
                        help="params file (default: %(default)s)")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def run_command(command: Callable[[argparse.Namespace], object],
                args: argparse.Namespace) -> int:
    """Run ``command(args)`` with the project's logging; returns the exit status."""
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        command(args)
    except WizardcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def stage_main(name: str, doc: str, add_arguments: Callable[[argparse.ArgumentParser], None],
               command: Callable[[argparse.Namespace], object],
               argv: list[str] | None = None) -> int:
    """The body of ``stages/<name>.py``: parse the stage's arguments and run it."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=doc,
                                     parents=[common_parser()],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
