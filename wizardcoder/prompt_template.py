"""The one prompt template shared by training and generation.

WizardCoder's released evaluation script differs from its training template by a blank
line; here both sides call :func:`build_prompt`, so they cannot drift apart. Golden-string
tests pin the exact text.
"""

from __future__ import annotations

ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
ALPACA_TEMPLATE = ALPACA_HEADER + "\n\n### Instruction:\n{instruction}\n\n### Response:"

# Code Alpaca rows may carry a separate `input`; it is appended to the instruction the way
# the WizardCoder data files fold it in, so the template itself stays single-slot.
INPUT_JOINER = "\n\n"


def instruction_text(instruction: str, input_text: str = "") -> str:
    instruction = instruction.strip()
    input_text = (input_text or "").strip()
    return f"{instruction}{INPUT_JOINER}{input_text}" if input_text else instruction


def build_prompt(instruction: str, input_text: str = "") -> str:
    """The exact prompt text (no trailing newline): the response follows after it."""
    return ALPACA_TEMPLATE.format(instruction=instruction_text(instruction, input_text))


def build_target(response: str) -> str:
    """The response part as trained on: a newline after "### Response:", then the text.

    The EOS token is appended by the tokenizer-aware code, not here.
    """
    return "\n" + response.strip()


HUMANEVAL_INSTRUCTION = "Create a {language} script for this problem:\n{prompt}"


def humaneval_instruction(prompt: str, language: str = "Python") -> str:
    """How a completion-style benchmark prompt becomes an instruction (as WizardCoder did;
    MultiPL-E's tasks name their own language)."""
    return HUMANEVAL_INSTRUCTION.format(language=language, prompt=prompt.strip())
