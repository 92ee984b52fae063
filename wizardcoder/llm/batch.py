"""``llm.mode: batch``: a step's uncached requests go through OpenAI's Batch API.

The Batch API answers within 24 hours at half the price. For one ``chat_many`` call this
module takes the requests that are not in the :class:`~wizardcoder.llm.cache.RequestCache`,
writes them as JSONL input files (at most ``batch_max_requests`` lines and
``batch_max_bytes`` each, one model per file: OpenAI's rules), uploads them, creates one
batch per file, polls until each batch is done and stores every line in the same request
cache. The online path then finds everything cached and sends nothing; the bodies in the
files are exactly those the online client sends (:class:`~wizardcoder.llm.wire.Wire`) and
each line's ``custom_id`` is the request's cache key, so a batch answer and an online answer
are interchangeable.

A stage that waits up to a day gets killed, so every step is durable: the file id and its
request keys are committed to a small sqlite file next to the cache *before* the batch is
created, the batch id right after. A rerun finds the unfinished batches holding its keys and
resumes polling them instead of paying again; if the kill fell between creating a batch and
recording its id, the batch is found again by its input file id in ``GET /batches``.

Per-line outcomes follow the online rules: an answer is cached; a permanent failure (400
context_length, a content filter, another 400/413/422, ``content: null``) is cached as an
error of its class, so a rerun does not pay for it again; one every request would share (401,
403, 404) stops the stage; a transient one (429/5xx, a line left
unfinished by an expired or cancelled batch, an unreadable answer) is not cached and goes into
a follow-up batch of its own, in the same run, up to ``llm.batch_retries`` times; one still
failing then is reported to the caller, whose stage stops without dropping its row. Errors
of the API itself (5xx, timeouts) are waited out for ``llm.batch_patience_s``. The API key
is only ever in the request header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from wizardcoder.errors import ExternalError
from wizardcoder.llm.batch_api import ENDPOINT, BatchApi, NotFound
from wizardcoder.llm.batch_state import BatchState, state_path
from wizardcoder.llm.cache import RequestCache
from wizardcoder.llm.endpoint import Endpoint
from wizardcoder.llm.limits import Budget
from wizardcoder.llm.wire import (
    ChatRequest,
    MalformedResponse,
    Wire,
    classify_http_error,
    error_message,
    parse_completion,
)

STORE_CHUNK = 1000  # output lines per cache commit: one fsync each, not one per line
log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed", "expired", "cancelled")
# A batch whose id was lost is looked up in GET /batches (newest first) back to the upload
# time of its input file. Without a recorded upload time, back to the local record time less
# this (clock skew between this machine and the provider).
CLOCK_SKEW_S = 86400.0

@dataclass
class BatchOutcome:
    """What one prefetch did. ``answered``: keys stored (answers and permanent errors) from
    batches finished now, i.e. paid in this run; ``transient``: key -> why, not cached: still
    failing transiently after ``llm.batch_retries`` follow-up batches (a rerun retries)."""

    answered: set[str] = field(default_factory=set)
    transient: dict[str, str] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)


@dataclass
class _Job:
    file_id: str
    batch_id: str | None
    keys: set[str]
    status: str = "validating"
    done: int = 0  # lines completed or failed, as the server counts them
    seen: tuple = ()  # the last (status, completed, failed) logged


def split_files(lines: Sequence[tuple[str, str, bytes]], max_requests: int,
                max_bytes: int) -> list[list[tuple[str, bytes]]]:
    """Group (model, key, line) into files of one model, <= max_requests and <= max_bytes."""
    files: list[list[tuple[str, bytes]]] = []
    by_model: dict[str, list[tuple[str, bytes]]] = {}
    for model, key, line in lines:
        by_model.setdefault(model, []).append((key, line))
    for model_lines in by_model.values():
        current: list[tuple[str, bytes]] = []
        size = 0
        for key, line in model_lines:
            if len(line) > max_bytes:
                raise ExternalError(f"one batch request line is {len(line)} bytes, more than "
                                    f"llm.batch_max_bytes={max_bytes}; raise it (OpenAI "
                                    f"accepts files up to 200 MB)")
            if current and (len(current) >= max_requests or size + len(line) > max_bytes):
                files.append(current)
                current, size = [], 0
            current.append((key, line))
            size += len(line)
        if current:
            files.append(current)
    return files


async def prefetch(endpoint: Endpoint, wire: Wire, cache: RequestCache,
                   todo: dict[str, ChatRequest], *, desc: str, progress: bool,
                   budget: Budget | None) -> BatchOutcome:
    """Answer ``todo`` (cache key -> request, none of them cached) through the Batch API of
    ``endpoint`` into ``cache``; ``wire`` builds the bodies as the online client does."""
    outcome = BatchOutcome()
    if not todo:
        return outcome
    state = BatchState(state_path(cache.path))
    try:
        await _run(endpoint, wire, cache, state, todo, outcome, desc=desc, progress=progress,
                   budget=budget)
    finally:
        state.close()
    return outcome


def _submittable(todo: dict[str, ChatRequest], keys: list[str],
                 budget: Budget | None) -> tuple[list[str], float]:
    """The keys whose worst case fits the budget (in order), and the amount reserved."""
    if budget is None:
        return keys, 0.0
    fits, reserved = [], 0.0
    for key in keys:
        req = todo[key]
        worst = budget.worst_case(req.estimated_prompt_tokens(), req.max_tokens)
        if not budget.reserve(worst):
            break  # the online path then reports BudgetExceeded for the rest
        reserved += worst
        fits.append(key)
    return fits, reserved


async def _run(endpoint: Endpoint, wire: Wire, cache: RequestCache, state: BatchState,
               todo: dict[str, ChatRequest], outcome: BatchOutcome, *, desc: str,
               progress: bool, budget: Budget | None) -> None:
    cfg = endpoint.config
    jobs = [_Job(file_id, batch_id, keys) for file_id, (batch_id, keys)
            in state.unfinished().items() if keys & todo.keys()]
    covered = set().union(*(j.keys for j in jobs))
    new, reserved = _submittable(todo, [k for k in todo if k not in covered], budget)
    if jobs:
        log.info("%s: resuming %d unfinished batch(es) holding %d of these requests: %s",
                 desc, len(jobs), len(covered & todo.keys()),
                 ", ".join(j.batch_id or f"(file {j.file_id})" for j in jobs))
    bar = tqdm(total=sum(len(j.keys) for j in jobs) + len(new), desc=f"{desc} (batch)",
               unit="req", disable=not progress, mininterval=1.0, dynamic_ncols=True)
    problems: list[str] = []
    attempt = 1
    try:
        async with endpoint.session() as session:
            api = BatchApi(endpoint, session)
            while True:
                for job in jobs:
                    if job.batch_id is None:  # killed between upload and recording the batch
                        job.batch_id = await api.find_by_input(
                            job.file_id, state.search_from(job.file_id, CLOCK_SKEW_S))
                        await _create(api, state, job)
                jobs += await _submit(api, wire, state, todo, new, desc)
                outcome.batch_ids += [j.batch_id for j in jobs if j.batch_id]
                problems = await _poll(api, cache, state, jobs, outcome, bar, desc)
                if problems:
                    break
                # Lines that failed transiently (429/5xx, not run by an expired or cancelled
                # batch, unreadable) go into a follow-up batch of their own, in this run.
                retry = [k for k in todo if k in outcome.transient
                         and not outcome.transient[k].startswith("stage:")]
                if not retry or attempt > cfg.batch_retries:
                    break
                delay = random.uniform(0.5, 1.0) * min(
                    cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** (attempt - 1))
                log.warning("%s: %d request(s) failed transiently (first: %s); follow-up batch "
                            "%d of llm.batch_retries=%d in %.1f s", desc, len(retry),
                            outcome.transient[retry[0]], attempt, cfg.batch_retries, delay)
                await asyncio.sleep(delay)
                for key in retry:
                    del outcome.transient[key]
                attempt += 1
                new, jobs = retry, []
                bar.total += len(retry)
                bar.refresh()
    except (asyncio.CancelledError, KeyboardInterrupt):
        _interrupted(state, jobs, desc)
        raise
    finally:
        bar.close()
        if budget is not None:
            budget.release(reserved)  # the online path charges what was actually used
    for key in todo.keys() & outcome.transient.keys():
        if not outcome.transient[key].startswith("stage:"):
            outcome.transient[key] += (f" (in {attempt} batch(es); llm.batch_retries="
                                       f"{cfg.batch_retries} follow-up(s))")
    if problems:
        raise ExternalError(f"{desc}: {'; '.join(problems)}. Every other answer is cached; "
                            "fix the cause and rerun (unanswered requests go into a new batch)")


async def _submit(api: BatchApi, wire: Wire, state: BatchState, todo: dict[str, ChatRequest],
                  keys: list[str], desc: str) -> list[_Job]:
    """Upload ``keys`` as batch input files, record each and create its batch."""
    cfg = api.cfg
    lines = []
    for key in keys:
        body = wire.body(todo[key])
        line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
        lines.append((body["model"], key,
                      (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")))
    files = split_files(lines, cfg.batch_max_requests, cfg.batch_max_bytes)
    jobs = []
    for n, chunk in enumerate(files, 1):
        content = b"".join(line for _, line in chunk)
        model = wire.model(todo[chunk[0][0]])
        file_id, uploaded_at = await api.upload(content, f"wizardcoder-batch-{n}.jsonl")
        state.add_file(file_id, wire.identity(model),
                       {key: wire.body(todo[key]) for key, _ in chunk}, uploaded_at)
        job = _Job(file_id, None, {key for key, _ in chunk})
        jobs.append(job)
        await _create(api, state, job)
        log.info("%s: batch %s submitted (%d/%d: %d requests, %d bytes, model %s)",
                 desc, job.batch_id, n, len(files), len(chunk), len(content), model)
    return jobs


def _interrupted(state: BatchState, jobs: list[_Job], desc: str) -> None:
    """Ctrl-C (or a cancelled task): say what keeps running at the provider and what to do."""
    running = [j for j in jobs if j.status not in (*TERMINAL, "not_found")]
    if not running:
        return
    ids = ", ".join(j.batch_id or f"(file {j.file_id}, batch id not yet recorded)"
                    for j in running)
    log.warning("%s: interrupted; %d batch(es) keep running at the provider (and may be "
                "billed): %s. They are recorded in %s: rerun the same command to resume "
                "polling them (nothing is paid twice), or cancel them with `wizardcoder "
                "evolve --round <rN> --cancel-batches` (`python -m stages.evolve ... "
                "--cancel-batches`); a rerun then keeps what they answered and sends the "
                "rest again", desc, len(running), ids, state.path)


async def cancel_unfinished(endpoint: Endpoint, cache_path) -> list[tuple[str, str]]:
    """Cancel every batch recorded as unfinished next to the request cache at
    ``cache_path``; (batch id, status) of each. The record stays: a rerun collects the
    answers a cancelled batch finished and submits the rest again."""
    state = BatchState(state_path(cache_path))
    done = []
    try:
        async with endpoint.session() as session:
            api = BatchApi(endpoint, session)
            for file_id, (batch_id, _) in state.unfinished().items():
                if batch_id is None:
                    batch_id = await api.find_by_input(
                        file_id, state.search_from(file_id, CLOCK_SKEW_S))
                    if batch_id is None:
                        continue
                    state.set_batch(file_id, batch_id)
                try:
                    done.append((batch_id, await api.cancel(batch_id)))
                except NotFound:
                    done.append((batch_id, "not_found"))
                except ExternalError as exc:  # e.g. already completed: nothing to cancel
                    done.append((batch_id, f"not cancelled: {exc}"))
    finally:
        state.close()
    return done


async def _create(api: BatchApi, state: BatchState, job: _Job) -> None:
    if job.batch_id is None:
        job.batch_id = await api.create(job.file_id,
                                        state.search_from(job.file_id, CLOCK_SKEW_S))
    state.set_batch(job.file_id, job.batch_id)


async def _poll(api: BatchApi, cache: RequestCache, state: BatchState, jobs: list[_Job],
                outcome: BatchOutcome, bar, desc: str) -> list[str]:
    """Poll until every batch is done and collected; returns what must stop the stage.
    Each batch's progress (status, request_counts) is logged when it changes."""
    cfg = api.cfg
    interval = cfg.batch_poll_s
    problems: list[str] = []
    active = list(jobs)
    while active:
        for job in list(active):
            try:
                batch = await api.call("GET", f"/batches/{job.batch_id}")
            except NotFound as exc:
                # Recorded but unknown here (another account or endpoint, or deleted): its
                # requests stay uncached and go into a follow-up batch.
                log.warning("batch %s is no longer known to the server (%s); its %d requests "
                            "go into a follow-up batch", job.batch_id, exc,
                            len(job.keys))
                job.status = "not_found"
                for key in job.keys:
                    outcome.transient[key] = f"batch {job.batch_id} not found"
                state.finish(job.file_id, job.status)
                active.remove(job)
                bar.update(len(job.keys) - job.done)
                continue
            job.status = str(batch.get("status"))
            counts = batch.get("request_counts") or {}
            done = min(len(job.keys), int(counts.get("completed") or 0)
                       + int(counts.get("failed") or 0))
            seen = (job.status, counts.get("completed"), counts.get("failed"))
            if seen != job.seen:
                job.seen = seen
                log.info("%s: batch %s %s: %s of %d done (%s failed)", desc, job.batch_id,
                         job.status, counts.get("completed", 0), len(job.keys),
                         counts.get("failed", 0))
            if job.status in TERMINAL:
                if job.status == "failed":  # the file was refused: nothing ran, nothing paid
                    errors = (batch.get("errors") or {}).get("data") or []
                    why = "; ".join(f"{e.get('code')}: {e.get('message')}"
                                    + (f" (line {e['line']})" if e.get("line") else "")
                                    for e in errors[:5]) or "no reason given"
                    problems.append(api.endpoint.redact(f"batch {job.batch_id} failed: {why}"))
                else:
                    problems += await _collect(api, cache, state, job, batch, outcome)
                state.finish(job.file_id, job.status)
                active.remove(job)
                done = len(job.keys)
            bar.update(max(0, done - job.done))
            job.done = max(job.done, done)
        statuses: dict[str, int] = {}
        for job in active:
            statuses[job.status] = statuses.get(job.status, 0) + 1
        bar.set_postfix_str(" ".join(f"{s}={n}" for s, n in sorted(statuses.items())),
                            refresh=False)
        if active:
            await asyncio.sleep(interval * (1 + 0.1 * random.random()))
            interval = min(cfg.batch_poll_max_s, interval * 1.5)
    return problems


async def _collect(api: BatchApi, cache: RequestCache, state: BatchState, job: _Job,
                   batch: dict, outcome: BatchOutcome) -> list[str]:
    """Store every line of a finished batch; lines it left unanswered stay uncached (in
    ``outcome.transient``)."""
    contents = [await api.content(batch[name]) for name in ("output_file_id", "error_file_id")
                if batch.get(name)]
    identity, requests = state.requests(job.file_id)
    stage_errors: list[str] = []

    def store() -> None:
        lines = [raw for content in contents for raw in content.decode("utf-8").splitlines()
                 if raw.strip()]
        for start in range(0, len(lines), STORE_CHUNK):  # one commit per chunk
            with cache.transaction():
                store_lines(lines[start:start + STORE_CHUNK])

    def store_lines(chunk: list[str]) -> None:
        for raw in chunk:
            try:
                line = json.loads(raw)
            except ValueError:  # its request stays unanswered: retried in a follow-up
                log.warning("batch %s: an unreadable output line is ignored: %.120r",
                            job.batch_id, raw)
                continue
            key = line.get("custom_id")
            if key not in requests:
                log.warning("batch %s: a line for unknown custom_id %r is ignored",
                            job.batch_id, key)
                continue
            verdict = _store_line(cache, api.endpoint, identity, key, requests[key], line)
            if verdict is None:
                outcome.answered.add(key)
            elif verdict.startswith("stage:"):
                stage_errors.append(verdict[len("stage:"):])
                outcome.transient[key] = verdict
            else:
                outcome.transient[key] = f"batch {job.batch_id}: {verdict}"

    await asyncio.to_thread(store)
    for key in job.keys - outcome.answered - outcome.transient.keys():
        outcome.transient[key] = f"batch {job.batch_id} ({job.status}) returned no line for it"
    retry = sum(1 for k in job.keys if k in outcome.transient)
    log.info("batch %s %s: %d stored, %d not answered (retried in a follow-up batch)",
             job.batch_id, job.status, len(job.keys) - retry, retry)
    if stage_errors:
        return [f"batch {job.batch_id}: {len(stage_errors)} line(s) failed in a way every "
                f"request would (first: {stage_errors[0]})"]
    return []


def _store_line(cache: RequestCache, endpoint: Endpoint, identity: str, key: str,
                request: dict, line: dict) -> str | None:
    """Cache one output line as the online client would; None when stored, else why not
    ('stage:...' for a failure that concerns every request, e.g. 401)."""
    response = line.get("response")
    if isinstance(response, dict) and response.get("status_code") is not None:
        status, body = int(response["status_code"]), response.get("body")
        if 200 <= status < 300:
            try:
                done = parse_completion(body if isinstance(body, dict) else str(body))
            except MalformedResponse as exc:
                return endpoint.redact(str(exc))
            cache.put(key, model_identity=identity, request=request, text=done.text
                      if done.error is None else endpoint.redact(done.error_message),
                      finish_reason=done.finish_reason, prompt_tokens=done.prompt_tokens,
                      completion_tokens=done.completion_tokens, model=done.model,
                      error=done.error)
            return None
        text = body if isinstance(body, str) else json.dumps(body)
        message = endpoint.redact(f"HTTP {status}: {error_message(text)}")
        kind, error_class = classify_http_error(status, text)
    else:  # failed without an HTTP response (e.g. batch_expired): a new batch can do it
        error = line.get("error") if isinstance(line.get("error"), dict) else {}
        message = endpoint.redact(f"{error.get('code')}: {error.get('message')}")
        kind, error_class = "retry", None
    if kind == "retry":
        return message
    if kind == "stage":
        return f"stage:{message}"
    cache.put(key, model_identity=identity, request=request, text=message,
              finish_reason=None, prompt_tokens=0, completion_tokens=0, model=None,
              error=error_class)
    return None
