"""Stage `generate`: benchmark completions from the fine-tuned model (section `generate`).

    python -m stages.generate --model models/sft --out data/eval/samples

Prompts each task of every benchmark that ``generate.benchmarks`` lists, samples
``n_samples`` completions through the chosen backend (:mod:`wizardcoder.generate.base`),
extracts the code and writes one self-describing samples file per benchmark,
``<out>/<benchmark>.jsonl`` (``--out FILE.jsonl``: that one file, for one benchmark); a
killed run resumes from :mod:`wizardcoder.generate.runner`'s progress files. The directory
appears whole: it is built beside ``--out`` and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from wizardcoder.config import load_section, to_dict
from wizardcoder.entry import stage_main
from wizardcoder.errors import ConfigError
from wizardcoder.tracking import stage_run

log = logging.getLogger(__name__)


def samples_file(out_dir: str | Path, benchmark: str) -> Path:
    """Where a benchmark's samples go in the stage's output directory."""
    return Path(out_dir) / f"{benchmark}.jsonl"


def run(params: str, model_dir: str, out: str, benchmarks: list[str] | None = None) -> dict:
    """Generate for ``benchmarks`` (default: ``generate.benchmarks``); returns the stats of
    each benchmark."""
    import dataclasses

    from wizardcoder.generate.config import GenerateConfig
    from wizardcoder.generate.runner import generate_samples

    config = load_section(params, "generate", GenerateConfig)
    if benchmarks:  # --benchmark: checked like the param
        config = dataclasses.replace(config, benchmarks=list(benchmarks))
    single_file = out.endswith(".jsonl")
    if single_file and len(config.benchmarks) != 1:
        raise ConfigError(f"--out {out}: one file holds one benchmark's samples, and "
                          f"generate.benchmarks lists {config.benchmarks}; give a directory")
    stats = {}
    with stage_run("generate", {"generate": to_dict(config)},
                   tags={"model_dir": model_dir,
                         "benchmarks": ",".join(config.benchmarks)}) as run_:
        if single_file:
            stats[config.benchmarks[0]] = generate_samples(config, model_dir, out,
                                                           benchmark=config.benchmarks[0])
        else:
            target = Path(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                for name in config.benchmarks:
                    stats[name] = generate_samples(config, model_dir, samples_file(build, name),
                                                   benchmark=name)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(build, target)
            finally:
                shutil.rmtree(build, ignore_errors=True)
        for name, numbers in stats.items():
            run_.log_metrics({f"{name}.{k}": v for k, v in numbers.items()
                              if isinstance(v, int | float) and not isinstance(v, bool)})
    log.info("generate: %s", stats)
    return stats


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/sft", help="model directory, or 'embedded'")
    p.add_argument("--out", default="data/eval/samples",
                   help="directory of <benchmark>.jsonl samples files, or one FILE.jsonl "
                        "when one benchmark is generated (default: %(default)s)")
    p.add_argument("--benchmark", action="append", default=None, metavar="NAME",
                   help="generate for this benchmark instead of generate.benchmarks "
                        "(repeatable)")


def command(args: argparse.Namespace) -> None:
    run(args.params, args.model, args.out, args.benchmark)


def main(argv: list[str] | None = None) -> int:
    return stage_main("generate", __doc__, add_arguments, command, argv)
