"""Prompt templates of Code Evol-Instruct, kept apart from the logic that fills them.

The structure follows the WizardCoder paper (one "make it a bit harder" template, five
code-specific methods, the WizardLM equality judge); the wording is this project's own.
"""

from __future__ import annotations

from wizardcoder.rounds import METHODS as METHOD_NAMES

EVOLVE_TEMPLATE = (
    "Rewrite the programming question below so that it becomes a little harder to solve. "
    "Make it harder with this method (other small changes that serve it are allowed):\n"
    "{method}\n\n"
    "Reply with the new question only. Do not answer it.\n\n"
    "Question:\n{question}"
)

# Method name -> instruction inserted into EVOLVE_TEMPLATE, in the order of rounds.METHODS
# (the names are shared with merge and the report).
METHODS: dict[str, str] = dict(zip(METHOD_NAMES, (
    # add_constraints
    "Add one or two new constraints or requirements to the task, "
    "using roughly ten more words than the original.",
    # rarer_requirement
    "Replace a requirement that is common in programming tasks with a less common and "
    "more specific one.",
    # more_reasoning
    "If the task can be solved with only a few logical steps, change it so that "
    "solving it takes more reasoning steps.",
    # erroneous_code
    "Include a short piece of incorrect code as a reference, so that the solver is "
    "misdirected and must find what is wrong with it.",
    # higher_complexity
    "Require a stricter time or space complexity than the obvious solution has.",
), strict=True))

# The paper asks for higher complexity "but not frequently": it gets a lower default weight.
DEFAULT_METHOD_WEIGHTS: dict[str, float] = {**dict.fromkeys(METHOD_NAMES, 1.0),
                                            "higher_complexity": 0.25}

ANSWER_SYSTEM = "You are a helpful programming assistant. Answer with correct, complete code."

# evolve.verify: tests, verify_tests: inline -- the answer carries its own tests.
ANSWER_WITH_TESTS_SYSTEM = (
    "You are a helpful programming assistant. Answer with correct, complete Python code in a "
    "```python block. Then write a second ```python block of assert statements that test "
    "your solution (at least three, including edge cases), with every expected value worked "
    "out by hand; the tests must pass when run after the solution."
)

# evolve.verify: tests, verify_tests: separate -- a second call writes the tests.
TESTS_TEMPLATE = (
    "Write tests for the solution below to the programming question below. Reply with one "
    "```python block of assert statements only (at least three, including edge cases), with "
    "every expected value worked out by hand from the question. Do not repeat the "
    "solution; the tests run after it.\n\n"
    "Question:\n{question}\n\n"
    "Solution:\n{solution}"
)

JUDGE_TEMPLATE = (
    "Compare the two programming questions below. Are they equal, meaning they have the "
    "same constraints and requirements and ask for the same depth and breadth of work?\n\n"
    "First question:\n{parent}\n\n"
    "Second question:\n{child}\n\n"
    "Answer with exactly one of: Equal, Not Equal."
)

# Words of the template itself: an evolved instruction that contains them copied the
# request instead of rewriting the question (elimination rule "template_copy").
TEMPLATE_MARKERS = (
    "#rewritten prompt#",
    "#given prompt#",
    "rewritten prompt",
    "given prompt",
    "rewritten question",
    "new question:",
    "the question below",
    "make it harder",
    "a little harder to solve",
    "do not answer it",
)

REFUSAL_MARKERS = (
    "sorry",
    "i cannot",
    "i can't",
    "i am unable",
    "i'm unable",
    "as an ai",
    "i apologize",
    "i apologise",
    "i'm not sure what",
    "i don't understand",
)


def evolve_messages(question: str, method: str) -> list[dict]:
    return [{"role": "user",
             "content": EVOLVE_TEMPLATE.format(method=METHODS[method], question=question)}]


def answer_messages(instruction: str, with_tests: bool = False) -> list[dict]:
    return [{"role": "system", "content": ANSWER_WITH_TESTS_SYSTEM if with_tests
             else ANSWER_SYSTEM},
            {"role": "user", "content": instruction}]


def tests_messages(question: str, solution: str) -> list[dict]:
    return [{"role": "user", "content": TESTS_TEMPLATE.format(question=question,
                                                              solution=solution)}]


def judge_messages(parent: str, child: str) -> list[dict]:
    return [{"role": "user", "content": JUDGE_TEMPLATE.format(parent=parent, child=child)}]
