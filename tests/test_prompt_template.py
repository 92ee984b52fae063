"""Golden strings for the one prompt template shared by training and generation.

If these change, every trained model and every evaluation changes with them: the test is
meant to fail loudly on any edit, however small (a blank line, a trailing space).
"""

from __future__ import annotations

import pytest

from wizardcoder.prompt_template import build_prompt, build_target
from wizardcoder.train.data import IGNORE_INDEX, encode_example

HEADER = ("Below is an instruction that describes a task. "
          "Write a response that appropriately completes the request.")


def test_build_prompt_golden_without_input():
    assert build_prompt("Write a function that reverses a string.") == (
        HEADER + "\n\n### Instruction:\nWrite a function that reverses a string."
        "\n\n### Response:")


def test_build_prompt_golden_with_input():
    assert build_prompt("Sort the list in place.", "nums = [3, 1, 2]") == (
        HEADER + "\n\n### Instruction:\nSort the list in place.\n\nnums = [3, 1, 2]"
        "\n\n### Response:")


def test_build_prompt_strips_and_ignores_blank_input():
    assert build_prompt("  Add two numbers.\n", "   \n") == build_prompt("Add two numbers.")
    assert build_prompt("Add two numbers.", None) == build_prompt("Add two numbers.")


def test_build_target_golden():
    assert build_target("def f():\n    return 1\n\n") == "\ndef f():\n    return 1"
    assert build_target("  x = 1") == "\nx = 1"


@pytest.fixture(scope="module")
def tokenizer(embedded_tokenizer):
    """The embedded model's tokenizer (read from its GGUF: no network needed)."""
    return embedded_tokenizer


@pytest.mark.parametrize("input_text", ["", "s = 'abc'"])
def test_prompt_ids_are_prefix_and_labels_mask_exactly_the_prompt(tokenizer, input_text):
    instruction, output = "Reverse the string s.", "def rev(s):\n    return s[::-1]"
    prompt_ids = tokenizer(build_prompt(instruction, input_text))["input_ids"]
    example, truncated = encode_example(tokenizer, instruction, input_text, output, 512)
    ids, labels = example["input_ids"], example["labels"]

    assert not truncated
    assert ids[:len(prompt_ids)] == prompt_ids
    assert labels[:len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    assert all(x != IGNORE_INDEX for x in labels[len(prompt_ids):])
    assert labels[len(prompt_ids):] == ids[len(prompt_ids):]
    assert ids[-1] == tokenizer.eos_token_id
    assert example["attention_mask"] == [1] * len(ids)
    response = tokenizer.decode(ids[len(prompt_ids):])
    assert response == build_target(output) + tokenizer.eos_token
    # For this BPE the separate tokenization equals tokenizing the whole text at once:
    # the "\n" opening the target is a clean token boundary after "### Response:".
    whole = build_prompt(instruction, input_text) + build_target(output) + tokenizer.eos_token
    assert tokenizer(whole)["input_ids"] == ids
