"""The `rounds` section: which evolution rounds exist and what each one reads.

DVC builds one `evolve@rN` stage per key of this mapping (a dict-keyed `foreach`), so a
round is added or removed with one `-S` override and DVC's run-cache re-runs only what
changed. The chain is fixed (r1 reads the seed file, rN reads round N-1's output); it is
validated here so a typo cannot silently fork the lineage.

It also holds the vocabulary evolve writes into a round's rows and stats and merge and the
report read back (method names, verdict names, the per-round verification columns), so
those readers never import the evolve stage.
"""

from __future__ import annotations

import re

from wizardcoder.config import read_params
from wizardcoder.errors import ConfigError, DataError
from wizardcoder.jsonl import iter_jsonl

SEED_FILE = "data/seed.jsonl"
EVOLVED_DIR = "data/evolved"

# Evolution methods, in the order evolve lists them; the names are `evolve.methods` keys.
METHODS = ("add_constraints", "rarer_requirement", "more_reasoning", "erroneous_code",
           "higher_complexity")

# Verdicts recorded on every evolved row (wizardcoder.evolve.filters decides them).
RULES = ("truncated", "empty", "template_copy", "judge_equal", "refusal")
REQUEST_ERROR = "request_error"
# evolve.verify: tests (wizardcoder.evolve.verify): decided after the answer, switched on by
# that param rather than by evolve.eliminate; "skipped" on every row without it.
NO_PYTHON = "no_python"
FAILED_TESTS = "failed_tests"
VERIFY_VERDICTS = (NO_PYTHON, FAILED_TESTS)
VERDICTS = (*RULES, *VERIFY_VERDICTS, REQUEST_ERROR)


def round_number(key: object) -> int:
    """``"r3"`` -> 3; anything that is not r1, r2, ... is a ConfigError."""
    match = re.fullmatch(r"r([1-9][0-9]*)", key) if isinstance(key, str) else None
    if match is None:
        raise ConfigError(f"rounds: key {key!r} is not a round name; expected r1, r2, ...")
    return int(match.group(1))


def round_input(n: int) -> str:
    return SEED_FILE if n == 1 else f"{EVOLVED_DIR}/r{n - 1}.jsonl"


def validate_rounds(rounds: object, where: str = "params.yaml") -> dict[str, str]:
    """Rounds sorted by number; errors name the key and the expected value."""
    if rounds is None:
        return {}
    if not isinstance(rounds, dict):
        raise ConfigError(f"{where}: rounds: expected a mapping like {{r1: {SEED_FILE}}}")
    numbers = []
    for key, value in rounds.items():
        try:
            n = round_number(key)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if value != round_input(n):
            raise ConfigError(f"{where}: rounds.{key}: expected {round_input(n)!r} "
                              f"(round {n} evolves the output of round {n - 1}), got {value!r}")
        numbers.append(n)
    numbers.sort()
    if numbers != list(range(1, len(numbers) + 1)):
        raise ConfigError(f"{where}: rounds: keys must be r1..rN without gaps, got "
                          f"{', '.join(f'r{n}' for n in numbers)}")
    return {f"r{n}": round_input(n) for n in numbers}


def load_rounds(params_path: str) -> dict[str, str]:
    return validate_rounds(read_params(params_path).get("rounds"), str(params_path))


def set_rounds_overrides(current: int, target: int) -> list[str]:
    """The `dvc exp run -S` overrides that change the round count from current to target."""
    if target > current:
        return [f"+rounds.r{n}={round_input(n)}" for n in range(current + 1, target + 1)]
    return [f"~rounds.r{n}" for n in range(current, target, -1)]


def round_columns(rows: list[dict], round_no: int) -> dict:
    """Per-round verification figures of a round's output rows (merge's metrics/rounds.json):
    kept rows verified, attempts per kept row, tests per kept row, rows eliminated."""
    kept = [r for r in rows if not r.get("carried")]
    verified = [(r.get("lineage") or {}).get("verify") for r in kept]
    verified = [v for v in verified if v]
    carried = [r for r in rows if r.get("carried_in_round") == round_no]
    tests = sum(r.get("carried_rule") == FAILED_TESTS for r in carried)
    no_python = sum(r.get("carried_rule") == NO_PYTHON for r in carried)
    decided = len(verified) + tests + no_python
    return {
        "verified_kept": len(verified),
        "verified_rate": round(len(verified) / decided, 4) if decided else None,
        "verify_attempts_per_kept": (round(sum(v["attempts"] for v in verified)
                                           / len(verified), 3) if verified else None),
        "tests_per_kept": (round(sum(v["tests"] for v in verified) / len(verified), 3)
                           if verified else None),
        "eliminated_by_tests": tests,
        "eliminated_no_python": no_python,
    }


VERIFY_COLUMNS = ("verified_kept", "verified_rate", "verify_attempts_per_kept", "tests_per_kept",
                  "eliminated_by_tests", "eliminated_no_python")


def split_verification(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(per-round records without the :func:`round_columns`, the verification records): the
    latter hold the evolution rounds (round >= 1) with those columns, and are empty when no
    round verified or eliminated anything (``evolve.verify: none``), so the verification
    charts are left out rather than drawn empty."""
    plain = [{k: v for k, v in r.items() if k not in VERIFY_COLUMNS} for r in records]
    verify = [{"round": r["round"], **{k: r.get(k) for k in VERIFY_COLUMNS}}
              for r in records if r["round"] >= 1]
    if not any(r["verified_kept"] or r["eliminated_by_tests"] or r["eliminated_no_python"]
               for r in verify):
        verify = []
    return plain, verify


def read_round_input(path: str) -> list[dict]:
    """The rows a round evolves (the seed file or the previous round's output), each with
    an id, an instruction and its lineage; a bad row is a DataError naming file and line."""
    rows = []
    for line, row in iter_jsonl(path):
        for name in ("id", "instruction"):
            if not isinstance(row.get(name), str) or not row[name].strip():
                raise DataError(path, line, name, "missing or not a non-empty string")
        if not isinstance(row.get("lineage"), dict):
            raise DataError(path, line, "lineage", "missing; rows must come from the seed or "
                            "evolve stage")
        rows.append(row)
    if not rows:
        raise DataError(path, None, None, "no rows to evolve")
    return rows
