"""params.yaml loading: the shipped file validates, and mistakes name key and section."""

import pytest

from wizardcoder.config import load_section
from wizardcoder.errors import ConfigError
from wizardcoder.params import SECTIONS, describe_params, section_class
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


def test_describe_params_lists_help():
    text = describe_params("seed")
    assert "shuffle_seed" in text and "Seed of the shuffle" in text
