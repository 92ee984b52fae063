"""HumanEval+ and MBPP+: base and plus tests scored separately, by differential testing.

evalplus rows carry ``base_input`` (the original benchmark's tests) and ``plus_input`` (its extra
tests) instead of a ``check`` function. For each set, one sandboxed worker (a fresh process, as
evalplus uses one per set) loads the candidate program and calls its entry point on every input
in turn, answering one frame per input; the trusted side compares each output with the
reference output (:mod:`wizardcoder.score.reference`) by evalplus's rules
(:mod:`wizardcoder.score.oracle`) and stops at the first failing input, as evalplus does by
default. A reply frame identical to the reference's passes without being decoded.

Time limits are evalplus's: input i may take ``max(min_time_limit_s, time_factor * t_i)`` where
``t_i`` is the canonical solution's time on it (1 s and 4x by default), and a whole set
``min(60, sum of those) + 2`` seconds. Memory: ``DiffSettings.memory_mb`` (4 GiB, evalplus's
default: some reference outputs alone need over 1 GiB).

One sample never ends or stalls the run: a reply is decoded and compared under the set's
deadline and the codec's budget (``codec.decode_value``; too slow: ``timeout``, a set or dict of
colliding hashes: ``unserializable``, a forged frame: ``crashed``), values are quoted in bounded
form (an int of 5,000 digits cannot be ``repr``-ed), and any other exception while judging is
that set's ``judge_error``. A set whose reference outputs could not be computed because the
sandbox failed is a ``sandbox_error``, never a set of skipped (vacuously passing) inputs.

A sample passes the base tests when every base input passes; evalplus's "plus" score counts a
sample only when it passes base *and* plus tests (``pass_at_k_summary``'s ``plus_pass@k``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from wizardcoder.errors import DataError
from wizardcoder.sandbox.codec import DecodeTimeout
from wizardcoder.sandbox.harness import (
    Verdict,
    decode_reply,
    evaluate_samples,
    exception_text,
    load_program,
    sample_jobs,
    sample_program,
    short_detail,
    show,
)
from wizardcoder.sandbox.pool import SandboxFailure, SandboxLimits, Worker, drain_spares
from wizardcoder.score.oracle import EVALPLUS_FLOAT_ATOL, output_matches
from wizardcoder.score.reference import SETS, Reference, references, stream_replies

log = logging.getLogger(__name__)

DATASETS = {"humaneval+": "humaneval", "mbpp+": "mbpp"}  # benchmark -> evalplus dataset
SET_CAP_S = 60.0  # evalplus untrusted_check: min(60, sum of per-input limits) + 1 (+1 to join)
SHOW = 120  # characters of an input or output quoted in a failure detail


@dataclass(frozen=True)
class DiffSettings:
    memory_mb: int = 4096
    min_time_limit_s: float = 1.0
    time_factor: float = 4.0


def spawn_limits(limits: SandboxLimits, settings: DiffSettings) -> SandboxLimits:
    return dataclasses.replace(limits, timeout_s=SET_CAP_S + 2, cpu_s=SET_CAP_S + 2,
                               memory_mb=settings.memory_mb)


def run_set(problem: dict, program: str, which: str, ref: Reference, message: str,
            dataset: str, limits: SandboxLimits, settings: DiffSettings) -> tuple[str, str]:
    """(kind, detail) of one candidate program on the ``which`` ("base" | "plus") inputs.
    Never raises for a sample: whatever goes wrong is this set's verdict."""
    inputs = problem[f"{which}_input"]
    count, entry = len(inputs), problem["entry_point"]
    if not isinstance(program, str):
        return "error", "the sample's program is not a string"
    if count == 0:
        return "passed", ""
    if "sandbox_error" in ref.kinds:
        why = ref.texts[ref.kinds.index("sandbox_error")]
        return "sandbox_error", f"the reference outputs of the {which} inputs could not be " \
                                f"computed: {why}"
    per_input = [max(settings.min_time_limit_s, settings.time_factor * t) for t in ref.seconds]
    wall = min(SET_CAP_S, sum(per_input)) + 2.0
    atol = float(problem.get("atol") or 0)
    find_zero = dataset == "humaneval" and entry == "find_zero"
    try:
        # Spares are started with the largest budget (one kind for every set); this set's own
        # wall-clock limit is the deadline, the CPU rlimit (62 s) a backstop.
        with Worker.started(spawn_limits(limits, settings)) as worker:
            worker.limits = dataclasses.replace(worker.limits, timeout_s=wall)
            worker.deadline = min(worker.deadline, time.monotonic() + wall)
            error = load_program(worker, program, entry)
            if error is not None:
                return "error", "program failed to load: {}: {}".format(*error)
            for i, frame, _ in stream_replies(worker, message, count, per_input):
                kind = ref.kinds[i]
                if kind != "skip" and frame != ref.frame(i):
                    where = f"{which} input {i + 1}/{count} {entry}(*{show(inputs[i], SHOW)})"
                    try:
                        failure = _judge(worker, frame, ref, i, dataset, entry, inputs[i], atol)
                    except SandboxFailure:
                        raise
                    except Exception as exc:  # the trusted side's own failure, on this reply
                        log.warning("%s: judging %s raised", problem["task_id"], where,
                                    exc_info=True)
                        return "judge_error", f"{where}: the scorer could not judge the " \
                                              f"reply: {exception_text(exc)}"
                    if failure is not None:
                        return failure[0], f"{where}{failure[1]}"
                if kind == "v" and atol == 0 and ref.floats[i] and not find_zero:
                    atol = EVALPLUS_FLOAT_ATOL  # evalplus's sticky tolerance (oracle.next_atol)
            if worker.failure is not None:
                raise worker.failure
            return "passed", ""
    except SandboxFailure as failure:
        return failure.kind, failure.detail
    except DataError:
        raise
    except Exception as exc:  # the sandbox itself broke (spawn failed, fds exhausted...)
        return "sandbox_error", exception_text(exc)


def _judge(worker: Worker, frame: bytes, ref: Reference, i: int, dataset: str, entry: str,
           inp, atol: float) -> tuple[str, str] | None:
    """None when the reply passes, else (kind, what happened). Decoding and comparing run
    under the set's deadline (a reply built to make them slow is a timeout)."""
    (key, value), = worker.parse(frame).items()
    if key == "ok":
        out = decode_reply(worker, value)
        try:
            matches = ref.kinds[i] == "v" and output_matches(
                dataset, entry, inp, out, ref.value(i), atol, worker.deadline)
        except DecodeTimeout as exc:
            raise worker.fail("timeout", f"comparing the reply: {exc}") from None
        if time.monotonic() > worker.deadline:
            raise worker.fail("timeout", "judging the reply ran past the set's wall-clock "
                                         f"limit of {worker.limits.timeout_s:.3g} s")
        if matches:
            return None
        expected = show(ref.value(i), SHOW) if ref.kinds[i] == "v" else "a larger output"
        if dataset == "humaneval" and entry == "find_zero":
            expected = f"|poly(xs, x)| <= {atol:g} (as the reference's {expected})"
        return "failed", f" returned {show(out, SHOW)}, expected {expected}"
    if key == "digest" and isinstance(value, str):
        if ref.kinds[i] == "d" and value == ref.texts[i]:
            return None
        return "failed", " returned a large output that differs from the reference"
    if key == "exc" and isinstance(value, list) and len(value) == 3 and \
            all(type(v) is str for v in value[:2]):
        return "error", f" raised {value[0][:100]}" + (f": {value[1][:300]}" if value[1] else "")
    if key == "unserializable" and isinstance(value, str):
        return "unserializable", f": {value[:300]}"
    raise worker.fail("crashed", f"unexpected reply {str(key)[:50]!r}")


def evaluate_differential(jobs: list[tuple[dict, str, int]], limits: SandboxLimits,
                          dataset: str, settings: DiffSettings | None = None, workers: int = 2,
                          progress: bool = True, use_cache: bool = True) -> list[Verdict]:
    """Verdicts for ``jobs`` = [(problem, program, sample index)], in order: ``passed`` /
    ``kind`` / ``detail`` for the base tests, ``plus_*`` for the plus tests."""
    from tqdm import tqdm

    settings = settings or DiffSettings()
    problems = {p["task_id"]: p for p, _, _ in jobs}
    refs, messages = references(problems, dataset, dataclasses.replace(
        limits, memory_mb=max(limits.memory_mb, settings.memory_mb)), workers, progress,
        use_cache)

    def one(position: int, which: str) -> tuple[int, str, str, str, float]:
        problem, program, _ = jobs[position]
        start = time.perf_counter()
        task_id = problem["task_id"]
        kind, detail = run_set(problem, program, which, refs[task_id][which],
                               messages[task_id][which], dataset, limits, settings)
        return position, which, kind, short_detail(detail), time.perf_counter() - start

    outcome: dict[tuple[int, str], tuple[str, str, float]] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, 64))) as pool, \
                tqdm(total=len(jobs), disable=not progress, desc="scoring base+plus",
                     unit="sample") as bar:
            futures = [pool.submit(one, i, which) for i in range(len(jobs)) for which in SETS]
            for future in as_completed(futures):
                position, which, kind, detail, seconds = future.result()
                outcome[position, which] = kind, detail, seconds
                if all((position, w) in outcome for w in SETS):
                    bar.update(1)
    finally:
        drain_spares()
    verdicts = []
    for position, (problem, _, index) in enumerate(jobs):
        (base, base_detail, t1), (plus, plus_detail, t2) = (outcome[position, w] for w in SETS)
        verdicts.append(Verdict(problem["task_id"], index, base == "passed", base, base_detail,
                                t1 + t2, plus == "passed", plus, plus_detail))
    return verdicts


def score_samples(problems: dict[str, dict], samples: list[dict], limits: SandboxLimits,
                  dataset: str | None = None, settings: DiffSettings | None = None,
                  workers: int = 2, progress: bool = True) -> list[Verdict]:
    """Verdicts of ``samples``, in order: ``dataset`` ("humaneval" | "mbpp", the evalplus
    dataset of a HumanEval+ / MBPP+ benchmark) judges them on its base and plus inputs
    (:func:`evaluate_differential`); None runs each problem's ``check``
    (:func:`wizardcoder.sandbox.evaluate_samples`)."""
    if dataset is None:
        return evaluate_samples(problems, samples, limits, workers=workers, progress=progress)
    jobs = [(problem, sample_program(problem, sample.get("completion"), sample.get("solution")),
             index) for problem, sample, index in sample_jobs(problems, samples)]
    return evaluate_differential(jobs, limits, dataset, settings, workers, progress)
