"""Seed loading: bundled, JSON and JSONL files; bad rows name file, line and field."""

import json

import pytest

from wizardcoder.cli import main
from wizardcoder.errors import DataError
from wizardcoder.seed.config import SeedConfig
from wizardcoder.seed.seeds import load_seeds, row_id


def test_bundled_seed_set_loads_with_stable_ids():
    rows, stats = load_seeds(SeedConfig(limit=0))
    assert len(rows) >= 40 and stats["missing_output"] == 0
    assert all(r["id"] == row_id(r["instruction"], r["input"]) for r in rows)
    again, _ = load_seeds(SeedConfig(limit=0, shuffle_seed=7))
    assert {r["id"] for r in again} == {r["id"] for r in rows}


def test_limit_and_shuffle_are_reproducible():
    a, _ = load_seeds(SeedConfig(limit=5, shuffle_seed=3))
    b, _ = load_seeds(SeedConfig(limit=5, shuffle_seed=3))
    assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) == 5


def test_json_array_and_jsonl(tmp_path):
    rows = [{"instruction": "Add two numbers.", "input": "", "output": "def add(a, b): ..."},
            {"instruction": "Reverse a string.", "output": "def rev(s): return s[::-1]"}]
    array = tmp_path / "seeds.json"
    array.write_text(json.dumps(rows, indent=2))
    lines = tmp_path / "seeds.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for path in (array, lines):
        loaded, stats = load_seeds(SeedConfig(source="file", path=str(path), shuffle_seed=None))
        assert [r["instruction"] for r in loaded] == ["Add two numbers.", "Reverse a string."]
        assert loaded[1]["input"] == "" and stats["rows"] == 2


@pytest.mark.parametrize("content, line, field, message", [
    ('{"instruction": "ok", "output": "x"}\n{"instruction": "a",\n', 2, None, "invalid JSON"),
    ('{"instruction": "ok"}\n\n{"output": "x"}\n', 3, "instruction", "missing"),
    ('{"instruction": 5}\n', 1, "instruction", "expected a string, got int"),
    ('{"instruction": "ok", "input": ["a"]}\n', 1, "input", "expected a string, got list"),
    ('{"instruction": "   "}\n', 1, "instruction", "is empty"),
    ('[1, 2]\n', 1, None, "expected a JSON object"),
])
def test_bad_rows_name_file_line_field(tmp_path, content, line, field, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        load_seeds(SeedConfig(source="file", path=str(path)))
    assert err.value.line == line and err.value.field == field
    assert str(err.value).startswith(f"{path}:{line}:") and message in str(err.value)


def test_json_array_error_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": null}\n]\n')
    with pytest.raises(DataError, match=r"bad\.json:3: field 'instruction': missing"):
        load_seeds(SeedConfig(source="file", path=str(path)))


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"instruction": "ok"}\n{"instruction": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid UTF-8"):
        load_seeds(SeedConfig(source="file", path=str(path)))


def test_cli_bad_input_exits_nonzero_without_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WIZARDCODER_MLFLOW", "0")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok", "output": "x"}\n{"input": "no instruction"}\n')
    params = tmp_path / "params.yaml"
    params.write_text(f"seed:\n  source: file\n  path: {bad}\n")
    out = tmp_path / "seed.jsonl"
    code = main(["seed", "--params", str(params), "--out", str(out),
                 "--metrics", str(tmp_path / "m.json")])
    assert code == 2 and not out.exists() and not (tmp_path / "m.json").exists()
    assert f"{bad}:2: field 'instruction': missing" in capsys.readouterr().err


def test_hf_source_offline_is_a_clear_error(monkeypatch):
    from wizardcoder.errors import ExternalError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # The libraries read those once, at import: in a suite that imported them earlier (any
    # transformers test) the variables alone left the Hub reachable -- 20 s of retries
    # online, and a test of something else than offline mode.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    with pytest.raises(ExternalError, match="cannot load Hugging Face dataset") as info:
        load_seeds(SeedConfig(source="hf", hf_dataset="no-such-user/no-such-dataset-xyz"))
    assert "OfflineModeIsEnabled" in str(info.value)  # offline mode, not a network error
