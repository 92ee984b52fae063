"""dvc.yaml declares, for each stage, only the params that can change what it writes.

A param declared but unable to change a stage's outputs (log cadence, concurrency, where
checkpoints go) makes DVC rerun the stage for nothing: changing `train.logging_steps` would
retrain from scratch. Each config field says whether it can (``option(affects_outputs=...)``);
this test holds dvc.yaml to it, both ways, for every section a stage declares.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from wizardcoder.config import output_fields
from wizardcoder.params import SECTIONS, section_class

REPO = Path(__file__).resolve().parents[1]


def all_fields(cls: type) -> list[str]:
    """Every key of a section, a nested section's (``evolve.sandbox``) dotted."""
    hints = typing.get_type_hints(cls)
    return [f"{f.name}.{inner}" if dataclasses.is_dataclass(hints[f.name]) else f.name
            for f in dataclasses.fields(cls)
            for inner in (all_fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name])
                          else [None])]


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def _declared(spec: dict) -> dict[str, set[str] | None]:
    """section -> declared keys (None: the whole section)."""
    out: dict[str, set[str] | None] = {}
    for entry in spec.get("params", []):
        assert isinstance(entry, str), f"params entries are section or section.key: {entry!r}"
        section, _, key = entry.partition(".")
        if not key:
            out[section] = None
        elif out.get(section, set()) is not None:
            out.setdefault(section, set()).add(key)
    return out


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_declared_params_are_exactly_those_that_change_outputs(stage):
    for section, keys in _declared(_stages()[stage]).items():
        if section not in SECTIONS:  # `rounds`: a mapping, every key is an input
            continue
        cls = section_class(section)
        relevant = set(output_fields(cls))
        if keys is None:
            idle = sorted(set(all_fields(cls)) - relevant)
            assert not idle, (f"stage {stage!r} declares the whole `{section}` section, but "
                              f"{idle} change no output: declare the other keys one by one")
        else:
            idle = sorted(keys - relevant)
            unknown = sorted(k for k in keys if k not in all_fields(cls))
            assert not unknown, f"stage {stage!r}: {section}.{unknown} are not keys"
            assert not idle, f"stage {stage!r} declares {section}.{idle}, which change no output"


# The sections each stage loads whole (its config): every key that changes its output counts.
OWN = {"seed": ["seed"], "evolve": ["llm", "evolve"], "merge": ["merge"], "train": ["train"],
       "generate": ["generate"], "score": ["score"], "generate_dev": ["generate"],
       "score_dev": ["score"], "log": ["tracking"]}


@pytest.mark.parametrize("stage", sorted(OWN))
def test_a_stage_declares_every_key_of_its_config_that_changes_outputs(stage):
    declared = _declared(_stages()[stage])
    for section in OWN[stage]:
        assert section in declared, f"stage {stage!r} does not declare `{section}`"
        keys = declared[section]
        if keys is not None:  # whole sections are checked above
            missing = sorted(set(output_fields(section_class(section))) - keys)
            assert not missing, f"stage {stage!r} does not declare {section}.{missing}"


def test_score_reads_no_round_or_merge_params():
    """The pass@k-vs-rounds point is written by the log stage: adding a round must not rerun
    the sandbox."""
    assert set(_declared(_stages()["score"])) == {"score"}
    assert set(_declared(_stages()["score_dev"])) == {"score"}


def _stages_to_run(repo, env, dvc, overrides: dict) -> tuple[set[str], str]:
    """Set ``overrides`` ({"section.key": value}) in the workspace's params.yaml and ask DVC
    which stages changed (`dvc status --json`) and what `dvc repro --dry` would run; the
    file is put back afterwards."""
    import json
    import subprocess

    path = repo / "params.yaml"
    original = path.read_text()
    data = yaml.safe_load(original)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = data
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        status = subprocess.run(f"{dvc} status --json", cwd=repo, env=env, shell=True,
                                capture_output=True, text=True, timeout=300, check=True)
        dry = subprocess.run(f"{dvc} repro --dry", cwd=repo, env=env, shell=True,
                             capture_output=True, text=True, timeout=300, check=True)
    finally:
        path.write_text(original)
    changed = {name.split(":")[-1] for name in json.loads(status.stdout or "{}")}
    return changed - {"log"}, dry.stdout + dry.stderr  # log: always_changed


@pytest.mark.slow
def test_a_key_only_scoring_reads_reruns_only_the_score_stages(workspace):
    """On the reproduced pipeline: a score-only key marks score and score_dev and nothing
    upstream (it used to rerun every evolve round and merge, with evolve.verify: none);
    each stage's own sandbox keys mark that stage only."""
    repo, env, dvc = workspace
    rounds = {f"evolve@{key}" for key in yaml.safe_load((repo / "params.yaml").read_text())
              ["rounds"]}
    for key, value in (("score.timeout_s", 5.0), ("score.memory_mb", 512),
                       ("score.isolation", "best_effort"), ("score.ks", [1])):
        changed, dry = _stages_to_run(repo, env, dvc, {key: value})
        assert changed == {"score", "score_dev"}, (key, changed)
        assert "Running stage 'score'" in dry and "Running stage 'merge'" not in dry, key
        assert "Running stage 'evolve@" not in dry, (key, dry[-2000:])
    changed, _ = _stages_to_run(repo, env, dvc, {"evolve.sandbox.timeout_s": 5.0})
    assert changed == rounds
    changed, _ = _stages_to_run(repo, env, dvc, {"merge.sandbox.timeout_s": 5.0})
    assert changed == {"merge"}
    changed, _ = _stages_to_run(repo, env, dvc, {"score.workers": 1,
                                                 "evolve.sandbox.workers": 1})
    assert changed == set()   # concurrency changes no output
