"""`wizardcoder params`: every params.yaml section and key with its type, default and help."""

from __future__ import annotations

import importlib

from wizardcoder.config import describe

# section -> "module:Class"; imported lazily so the listing needs no heavy imports up front.
SECTIONS = {
    "seed": "wizardcoder.seed.config:SeedConfig",
    "llm": "wizardcoder.llm.config:LLMConfig",
    "evolve": "wizardcoder.evolve.config:EvolveConfig",
    "merge": "wizardcoder.merge.config:MergeConfig",
    "train": "wizardcoder.train.config:TrainConfig",
    "generate": "wizardcoder.generate.config:GenerateConfig",
    "score": "wizardcoder.score.config:ScoreConfig",
    "select": "wizardcoder.experiments.config:SelectConfig",
    "tracking": "wizardcoder.log.config:TrackingConfig",
}


def section_class(section: str) -> type:
    module, _, name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def describe_params(only: str | None = None) -> str:
    lines = []
    for section in SECTIONS:
        if only and section != only:
            continue
        cls = section_class(section)
        lines.append(f"{section}:  ({cls.__doc__.strip().splitlines()[0]})")
        for name, type_name, default, help_text in describe(cls):
            lines.append(f"  {name}: {default!r}  [{type_name}]\n      {help_text}")
        lines.append("")
    lines.append("rounds:  mapping r1..rN -> input file (r1: data/seed.jsonl, "
                 "rN: data/evolved/r(N-1).jsonl); one evolve@rN stage per key.")
    return "\n".join(lines)
