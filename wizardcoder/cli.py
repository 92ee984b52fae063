"""The `wizardcoder` command: one subcommand per pipeline stage, plus helpers.

    wizardcoder seed      --params params.yaml --out data/seed.jsonl
    wizardcoder evolve    --round r1 --input data/seed.jsonl --out data/evolved/r1.jsonl
    wizardcoder merge     --out data/merged/train.jsonl
    wizardcoder train     --data data/merged/train.jsonl --out models/sft
    wizardcoder generate  --model models/sft --out data/eval/samples
    wizardcoder score     --samples data/eval/samples/humaneval.jsonl
    wizardcoder log       # the whole experiment on its MLflow parent run
    wizardcoder report    # HTML + Markdown report comparing experiments
    wizardcoder params    [section]      # effective params.yaml values, defaults, help
    wizardcoder exp       rounds|grid|compare|select-rounds   # DVC experiment helpers

A stage subcommand is the same code DVC runs through ``stages/<stage>.py``: both parse the
arguments that ``wizardcoder/<stage>/stage.py`` declares and call its ``run``. Errors in
input or configuration print one line naming the file, line and field, and exit with status 2.
Output piped into a reader that stops early (``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import platform
import re
import sys
import textwrap
from pathlib import Path

import yaml

from wizardcoder import __version__
from wizardcoder.config import describe, from_dict, read_params
from wizardcoder.entry import common_parser, run_command
from wizardcoder.errors import ConfigError
from wizardcoder.params import ROUNDS, SECTIONS, TOP_LEVEL, section_class
from wizardcoder.rounds import validate_rounds

# subcommand -> (stage module, help); each module has add_arguments(parser) and main/command.
STAGES = {
    "seed": ("wizardcoder.seed.stage", "load and validate seed instructions"),
    "evolve": ("wizardcoder.evolve.stage", "run one Code Evol-Instruct round"),
    "merge": ("wizardcoder.merge.stage", "merge, dedupe and decontaminate seed + rounds"),
    "train": ("wizardcoder.train.stage", "supervised fine-tuning"),
    "generate": ("wizardcoder.generate.stage", "benchmark completions"),
    "score": ("wizardcoder.score.stage", "sandboxed execution and pass@k"),
    "log": ("wizardcoder.log.stage",
            "log the whole experiment on its MLflow parent run (the last stage)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wizardcoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action=VersionAction,
                        help="print the versions of wizardcoder and its main dependencies")
    common = common_parser()
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser

    for name, (module_name, help_text) in STAGES.items():
        module = importlib.import_module(module_name)
        p = add(name, parents=[common], help=help_text,
                description=module.__doc__.split("\n\n")[0],
                epilog=getattr(module, "CLI_EPILOG", None))
        module.add_arguments(p)
        p.set_defaults(func=module.command)

    p = add("report", parents=[common], help="HTML + Markdown report comparing experiments")
    p.add_argument("--out-dir", default="reports",
                   help="writes report.html (self-contained), report.md and figures/ "
                        "(default: %(default)s)")
    p.add_argument("--exp", action="append", metavar="NAME",
                   help="experiment name or revision to include (repeatable; 'workspace' "
                        "for the working tree); default: the baseline, its experiments and "
                        "the workspace")
    p.add_argument("--workspace-only", action="store_true",
                   help="only the working tree's outputs (no `dvc exp show`)")
    p.add_argument("--no-mlflow", action="store_true", help="do not look up MLflow runs")
    p.add_argument("--bootstrap", type=int, default=2000,
                   help="bootstrap resamples for the pass@k intervals (default: %(default)s)")
    p.set_defaults(func=_report)

    p = add("params", parents=[common],
            help="the effective params.yaml values, the default beside each that differs, "
                 "and every key's help text",
            description="Print the values the stages read from the params file (--params), "
                        "as YAML: each key with its help text above it, its type, and "
                        "'default: X' where the file sets another value. A section or key "
                        "the file leaves out shows its default.")
    p.add_argument("section", nargs="?", choices=TOP_LEVEL, metavar="SECTION",
                   help=f"one section only: {', '.join(TOP_LEVEL)}")
    p.add_argument("--changed", action="store_true",
                   help="only the keys whose value differs from the default")
    p.add_argument("--no-help", dest="with_help", action="store_false",
                   help="values only, without the help text")
    p.set_defaults(func=_params)

    p = add("exp", help="DVC experiment helpers: round counts, grids, comparison, round "
                        "selection (each prints the DVC commands it runs)")
    exp = p.add_subparsers(dest="exp_command", required=True).add_parser
    e = exp("rounds", parents=[common], help="run (or queue) an experiment with N rounds")
    e.add_argument("count", type=int, help="number of evolution rounds")
    e.add_argument("--queue", action="store_true", help="queue it (dvc exp run --queue)")
    e.add_argument("--name", help="experiment name (dvc exp run --name)")
    e.add_argument("--force", action="store_true", help="overwrite an experiment of that name")
    e.set_defaults(func=_experiments("cmd_rounds"))
    e = exp("grid", parents=[common], help="queue one experiment per setting")
    e.add_argument("--rounds", type=int, nargs="+", required=True, help="round counts, e.g. 1 2 3")
    e.add_argument("--baselines", nargs="*", choices=("seed_only", "equal_size"),
                   help="add unevolved baselines (no value: both)")
    e.add_argument("--ablate-methods", action="store_true",
                   help="add one experiment per evolution method with its weight set to 0")
    e.add_argument("--verify", action="store_true",
                   help="add a verified experiment (evolve.verify=tests) beside each round count")
    e.add_argument("--prefix", default="", help="prefix of the experiment names")
    e.add_argument("--force", action="store_true", help="overwrite experiments of those names")
    e.add_argument("--run", action="store_true",
                   help="start the queue (dvc queue start -j N) and wait for the grid")
    e.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (default 1)")
    e.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    e.add_argument("--timeout", type=float, default=None, help="give up waiting after S seconds")
    e.set_defaults(func=_experiments("cmd_grid"))
    e = exp("compare", parents=[common],
            help="the headline metrics of every experiment and the params that differ")
    e.add_argument("revs", nargs="*", help="only these experiments (default: the workspace, "
                   "the baseline commit and its experiments); with --diff: none = HEAD vs "
                   "workspace, one = HEAD vs it, or two")
    e.add_argument("--md", action="store_true", help="Markdown table")
    e.add_argument("--diff", action="store_true",
                   help="then every difference: dvc params diff, dvc metrics diff and the "
                        "details files (metrics/details/)")
    e.set_defaults(func=_experiments("cmd_compare"))
    e = exp("select-rounds", parents=[common],
            help="choose the round count on the held-out dev set (section select)")
    e.add_argument("--out", default="metrics/round_selection.json")
    e.set_defaults(func=_experiments("cmd_select_rounds"))
    from wizardcoder.experiments import dev

    for name, (add_arguments, command, help_text) in dev.STAGES.items():
        e = exp(name, parents=[common], help=help_text)
        add_arguments(e)
        e.set_defaults(func=command)
    return parser


def _experiments(name: str):
    def command(args: argparse.Namespace) -> None:
        from wizardcoder.experiments import commands

        getattr(commands, name)(args)
    return command


def _report(args: argparse.Namespace) -> None:
    from wizardcoder.experiments.report import build_report

    paths = build_report(".", args.out_dir, args.exp, args.workspace_only,
                         not args.no_mlflow, args.bootstrap)
    for path in paths.values():
        print(path)


def _params(args: argparse.Namespace) -> None:
    print(render_params(args.params, args.section, changed_only=args.changed,
                        with_help=args.with_help), end="")


# Sections named after the stage that reads them borrow its one-line help as their title.
SECTION_STAGE = {"tracking": "log"}
HELP_WIDTH = 96


def version_line() -> str:
    """``wizardcoder --version``: this package and the versions a bug report needs."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("dvc", "mlflow", "torch", "transformers", "llama_cpp_python"):
        try:
            found.append(f"{package.replace('_', '-')} {version(package)}")
        except PackageNotFoundError:
            continue
    return (f"wizardcoder {__version__} (python {platform.python_version()}; "
            f"{', '.join(found)})")


class VersionAction(argparse.Action):
    """``--version`` printed as is (argparse's own action re-wraps it) and computed only when
    asked (it reads package metadata)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def section_title(section: str, cls: type) -> str:
    """One line saying what a section is for (its class docstring, or its stage's help)."""
    line = (cls.__doc__ or "").strip().splitlines()[0].strip()
    prefixed = re.fullmatch(r"params\.yaml section `\w+`(:\s*(.*)|.*)", line)
    if prefixed is None:
        return line.rstrip(".")
    if prefixed.group(2):
        return prefixed.group(2).rstrip(".")
    stage = STAGES.get(SECTION_STAGE.get(section, section))
    return stage[1] if stage else line.rstrip(".")


def yaml_value(value: object) -> str:
    """A value as one line of YAML (what the file would say)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


def render_params(path: str | Path, only: str | None = None, *, changed_only: bool = False,
                  with_help: bool = True) -> str:
    """The effective value of every key as YAML that loads back to the same values: each
    key's help above it (``with_help``), its type, and ``default: X`` where the file sets
    another value. A missing params file shows the defaults (said in the first line); a
    file with an unknown section, key or value is the same error every stage gives."""
    path = Path(path)
    exists = path.is_file()
    data = read_params(path) if exists else {}  # an unknown section is an error there
    where = path if exists else f"{path} (not found: the defaults)"
    out = [f"# wizardcoder params: effective values of {where}"
           + ("; only those that differ from the default" if changed_only else ""),
           "# '# default: X' marks a value the file changes; `wizardcoder params SECTION` "
           "shows one section", ""]
    for section in SECTIONS:
        if only not in (None, section):
            continue
        cls = section_class(section)
        try:
            config = from_dict(cls, data.get(section), section)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        lines = field_lines(config, "  ", changed_only, with_help)
        if lines or not changed_only:
            out += [f"{section}:    # {section_title(section, cls)}", *lines, ""]
    if only in (None, ROUNDS):
        rounds = validate_rounds(data.get(ROUNDS), str(path))
        if rounds or not changed_only:
            out.append(f"{ROUNDS}:    # one evolve@rN stage per key; r1 reads data/seed.jsonl, "
                       "rN reads round N-1's output")
            out += [f"  {key}: {value}" for key, value in rounds.items()] or ["  {}"]
            out.append("")
    return "\n".join(out)


def field_lines(config: object, indent: str, changed_only: bool, with_help: bool) -> list[str]:
    """One config object's keys (a nested config, e.g. ``evolve.sandbox``, as a block)."""
    lines = []
    for name, type_name, default, help_text in describe(type(config)):
        value = getattr(config, name)
        nested = None
        if dataclasses.is_dataclass(value):
            nested = field_lines(value, indent + "  ", changed_only, with_help)
            if changed_only and not nested:
                continue
        elif changed_only and value == default:
            continue
        if with_help:
            lines += textwrap.wrap(help_text, HELP_WIDTH, initial_indent=f"{indent}# ",
                                   subsequent_indent=f"{indent}# ")
        if nested is not None:
            lines += [f"{indent}{name}:", *nested] if nested else [f"{indent}{name}: {{}}"]
            continue
        type_name = type_name.replace("NoneType", "null")
        note = type_name if value == default else f"{type_name}; default: {yaml_value(default)}"
        lines.append(f"{indent}{name}: {yaml_value(value)}    # {note}")
    return lines


def _quiet_broken_pipe() -> int:
    """The reader of our output left (``| head``): stop without a traceback. stdout is
    pointed at /dev/null so the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # what a shell reports for a writer killed by SIGPIPE (128 + 13)


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        status = run_command(args.func, args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()


if __name__ == "__main__":
    sys.exit(main())
