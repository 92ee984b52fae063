"""params.yaml loading: the shipped file validates, and mistakes name key and section."""

import subprocess
import sys

import pytest

from wizardcoder.config import describe, load_section, output_fields
from wizardcoder.errors import ConfigError
from wizardcoder.params import SECTIONS, TOP_LEVEL, section_class
from wizardcoder.rounds import load_rounds, set_rounds_overrides, validate_rounds


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_shipped_params_load(section):
    config = load_section("params.yaml", section, section_class(section))
    assert config is not None


def test_shipped_rounds_chain():
    assert load_rounds("params.yaml") == {"r1": "data/seed.jsonl", "r2": "data/evolved/r1.jsonl"}


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_section_key_and_choices(tmp_path):
    path = write(tmp_path, "seed:\n  sorce: bundled\n")
    with pytest.raises(ConfigError) as err:
        load_section(path, "seed", section_class("seed"))
    message = str(err.value)
    assert "seed" in message and "'sorce'" in message and "did you mean 'source'" in message
    assert "valid keys:" in message and "limit" in message


def test_wrong_type_names_key_and_expected(tmp_path):
    path = write(tmp_path, "seed:\n  limit: many\n")
    with pytest.raises(ConfigError, match=r"seed\.limit: expected int, got 'many'"):
        load_section(path, "seed", section_class("seed"))


def test_invalid_choice_lists_choices(tmp_path):
    path = write(tmp_path, "seed:\n  source: s3\n")
    with pytest.raises(ConfigError, match=r"seed\.source: 's3' is not one of \['bundled'"):
        load_section(path, "seed", section_class("seed"))


def test_post_init_validation_names_field(tmp_path):
    path = write(tmp_path, "seed:\n  source: file\n")
    with pytest.raises(ConfigError, match=r"seed\.path: expected a JSON/JSONL file path"):
        load_section(path, "seed", section_class("seed"))


def test_evolve_unknown_method(tmp_path):
    path = write(tmp_path, "evolve:\n  methods: {add_constraints: 1, deepen: 2}\n")
    with pytest.raises(ConfigError, match=r"unknown method 'deepen'; valid methods: add_const"):
        load_section(path, "evolve", section_class("evolve"))


def test_yaml_syntax_error_has_line(tmp_path):
    path = write(tmp_path, "seed:\n  limit: [1\n")
    with pytest.raises(ConfigError, match=r"params\.yaml:\d+: invalid YAML"):
        load_section(path, "seed", section_class("seed"))


def test_rounds_chain_is_validated():
    assert validate_rounds({"r2": "data/evolved/r1.jsonl", "r1": "data/seed.jsonl"}) == {
        "r1": "data/seed.jsonl", "r2": "data/evolved/r1.jsonl"}
    with pytest.raises(ConfigError, match=r"rounds\.r2: expected 'data/evolved/r1.jsonl'"):
        validate_rounds({"r1": "data/seed.jsonl", "r2": "data/seed.jsonl"})
    with pytest.raises(ConfigError, match="without gaps"):
        validate_rounds({"r1": "data/seed.jsonl", "r3": "data/evolved/r2.jsonl"})
    with pytest.raises(ConfigError, match="not a round name"):
        validate_rounds({"round1": "data/seed.jsonl"})


def test_round_overrides():
    assert set_rounds_overrides(2, 4) == ["+rounds.r3=data/evolved/r2.jsonl",
                                         "+rounds.r4=data/evolved/r3.jsonl"]
    assert set_rounds_overrides(3, 1) == ["~rounds.r3", "~rounds.r2"]


def test_describe_lists_help():
    rows = {name: help_text for name, _, _, help_text in describe(section_class("seed"))}
    assert "Seed of the shuffle" in rows["shuffle_seed"]


def test_unknown_section_names_the_valid_ones(tmp_path):
    path = write(tmp_path, "seed:\n  limit: 2\ntrian:\n  max_steps: 1\n")
    with pytest.raises(ConfigError) as err:
        load_section(path, "seed", section_class("seed"))  # any section: the file is refused
    message = str(err.value)
    assert "unknown section 'trian'" in message and "did you mean 'train'" in message
    assert f"valid sections: {', '.join(TOP_LEVEL)}" in message


def test_every_stage_stops_on_an_unknown_section(tmp_path):
    """Through the real entry points (python -m stages.X, as dvc.yaml runs them): exit 2,
    the error names the file and the valid sections, and nothing is written."""
    path = write(tmp_path, open("params.yaml").read() + "\ntrian:\n  max_steps: 1\n")
    out = tmp_path / "out"
    commands = {
        "seed": ["--out", out / "seed.jsonl", "--metrics", out / "seed.json"],
        "evolve": ["--round", "r1", "--input", "data/seed.jsonl", "--out", out / "r1.jsonl",
                   "--rejected", out / "rej.jsonl", "--metrics", out / "r1.json"],
        "merge": ["--out", out / "train.jsonl", "--metrics", out / "merge.json"],
        "train": ["--data", out / "train.jsonl", "--out", out / "sft",
                  "--metrics", out / "train.json"],
        "generate": ["--model", out / "sft", "--out", out / "samples.jsonl"],
        "score": ["--samples", out / "samples.jsonl", "--metrics", out / "score.json"],
        "generate_dev": ["--model", out / "sft", "--out", out / "dev.jsonl"],
        "score_dev": ["--samples", out / "dev.jsonl", "--metrics", out / "dev.json"],
        "log": [],
    }
    for stage, args in commands.items():
        proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params", str(path),
                               *map(str, args)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (stage, proc.returncode, proc.stderr[-600:])
        assert "unknown section 'trian'" in proc.stderr, (stage, proc.stderr[-600:])
        assert "valid sections: seed, llm, evolve" in proc.stderr, stage
    assert not out.exists()


def test_nested_sandbox_keys_are_output_fields_and_errors_name_their_place(tmp_path):
    fields = output_fields(section_class("evolve"))
    assert "sandbox.timeout_s" in fields and "sandbox.workers" not in fields
    assert "sandbox" not in fields
    path = write(tmp_path, "merge:\n  sandbox:\n    timeout_s: 0\n")
    with pytest.raises(ConfigError, match=r"merge\.sandbox\.timeout_s: expected a positive"):
        load_section(path, "merge", section_class("merge"))
    path = write(tmp_path, "evolve:\n  sandbox:\n    timeout: 5\n")
    with pytest.raises(ConfigError, match=r"evolve\.sandbox: unknown key 'timeout'"):
        load_section(path, "evolve", section_class("evolve"))
