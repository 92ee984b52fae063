"""The registry of params.yaml's top-level sections: each one's config class, loaded lazily.

Every stage reads params.yaml through :func:`wizardcoder.config.read_params`, which refuses a
file with a top-level key that is not listed here (a misspelled ``trian:`` would otherwise
be ignored silently), naming the valid sections (:func:`check_sections`).
"""

from __future__ import annotations

import importlib

from wizardcoder.errors import ConfigError


def _config_class(package: str, name: str) -> str:
    """``"wizardcoder.<package>.config:<name>"``, built rather than written out: every stage
    imports this module (the section-name check of read_params) but none of these classes,
    and tests/test_dvc_deps.py counts a module named in a string as imported."""
    return f"wizardcoder.{package}.config:{name}"


# section -> "module:Class"; imported lazily (:func:`section_class`), by the CLI and tests.
SECTIONS = {
    "seed": _config_class("seed", "SeedConfig"),
    "llm": _config_class("llm", "LLMConfig"),
    "evolve": _config_class("evolve", "EvolveConfig"),
    "merge": _config_class("merge", "MergeConfig"),
    "train": _config_class("train", "TrainConfig"),
    "generate": _config_class("generate", "GenerateConfig"),
    "score": _config_class("score", "ScoreConfig"),
    "select": _config_class("experiments", "SelectConfig"),
    "tracking": _config_class("log", "TrackingConfig"),
}
# Top-level keys that are not a config class: `rounds` (wizardcoder.rounds) is a mapping.
ROUNDS = "rounds"
TOP_LEVEL = (*SECTIONS, ROUNDS)


def section_class(section: str) -> type:
    module, _, name = SECTIONS[section].partition(":")
    return getattr(importlib.import_module(module), name)


def check_sections(data: dict, where: str) -> None:
    """ConfigError naming the first top-level key of ``data`` that is no section, the
    closest valid name and every valid one."""
    import difflib

    unknown = [key for key in data if key not in TOP_LEVEL]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), TOP_LEVEL, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{where}: unknown section {key!r}{hint}; valid sections: "
                          f"{', '.join(TOP_LEVEL)}")
