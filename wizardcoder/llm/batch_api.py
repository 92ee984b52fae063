"""The OpenAI Files and Batches endpoints, as :mod:`wizardcoder.llm.batch` uses them: upload,
create (never blindly retried: a lost answer may hide a created batch, found again by its
input file), poll, download, cancel; 429/5xx and connection errors waited out for
``llm.batch_patience_s``, never longer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

from wizardcoder.errors import ExternalError
from wizardcoder.llm.endpoint import Endpoint
from wizardcoder.llm.limits import parse_retry_after
from wizardcoder.llm.wire import RETRY_STATUSES, error_message

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"  # the `url` of each input line and the batch's endpoint
COMPLETION_WINDOW = "24h"          # the only window OpenAI offers


class NotFound(ExternalError):
    """404 from the Batch API (a batch or file this account does not have)."""


class Transient(ExternalError):
    """A failure worth retrying (429, 5xx, timeout), raised by ``call(..., retry=False)``."""


class BatchApi:
    """The files and batches endpoints over a session of the endpoint (its auth header and
    query parameters), retrying 429/5xx/connection errors like the online client."""

    def __init__(self, endpoint: Endpoint, session):
        self.endpoint, self.session, self.cfg = endpoint, session, endpoint.config

    async def call(self, method: str, path: str, *, long: bool = False, retry: bool = True,
                   **kwargs) -> Any:
        import aiohttp

        url = f"{self.endpoint.base_url}{path}"
        params = {**self.cfg.query_params, **kwargs.pop("params", {})}
        make_body = kwargs.pop("body", None)  # rebuilt per attempt: a sent body is consumed
        if long:  # uploads and downloads of up to 200 MB: no total limit, only a read limit
            kwargs["timeout"] = aiohttp.ClientTimeout(total=None,
                                                      sock_read=self.cfg.timeout_s)
        attempt, failing_since = 0, None
        while True:
            attempt += 1
            retry_after = None
            if make_body is not None:
                kwargs["data"], content_type = make_body()
                kwargs["headers"] = {"Content-Type": content_type}
            try:
                async with self.session.request(method, url, params=params or None,
                                                allow_redirects=False, **kwargs) as resp:
                    status, headers = resp.status, resp.headers
                    body = await resp.read()
            except TimeoutError:
                error = f"timed out after {self.cfg.timeout_s} s"
            except (aiohttp.ClientError, OSError) as exc:
                error = f"connection error: {type(exc).__name__}: {exc}"
            else:
                if 200 <= status < 300:
                    return body if long and method == "GET" else json.loads(body)
                error = f"HTTP {status}: {error_message(body.decode('utf-8', 'replace'))}"
                if not (status in RETRY_STATUSES or status >= 500):
                    raise (NotFound if status == 404 else ExternalError)(self.endpoint.redact(
                        f"Batch API {method} {path} failed: {error}"))
                retry_after = parse_retry_after(headers)
            error = self.endpoint.redact(error)
            if not retry:
                raise Transient(f"Batch API {method} {path} failed: {error}")
            failing_since = failing_since or time.monotonic()
            if self.out_of_patience(attempt, failing_since):
                raise ExternalError(
                    f"Batch API {method} {path} failed after {attempt} attempt(s) over "
                    f"{time.monotonic() - failing_since:.0f} s (llm.batch_patience_s="
                    f"{self.cfg.batch_patience_s:g}): {error}. Submitted batches are recorded "
                    "and keep running at the provider; rerun the stage to resume polling them")
            delay = self.backoff(attempt, retry_after)
            (log.warning if attempt == 1 + self.cfg.max_retries else log.info)(
                "Batch API %s %s attempt %d failed (%s; failing for %.0f s); retrying in "
                "%.2f s, for up to llm.batch_patience_s=%g s", method, path, attempt, error,
                time.monotonic() - failing_since, delay, self.cfg.batch_patience_s)
            await asyncio.sleep(delay)

    def out_of_patience(self, attempt: int, failing_since: float) -> bool:
        """Give up once both ``max_retries`` retries were made and the API has been failing
        for ``batch_patience_s``: a batch runs for up to a day, an outage must not end it."""
        return (attempt > self.cfg.max_retries
                and time.monotonic() - failing_since >= self.cfg.batch_patience_s)

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff: up to ``backoff_max_s`` within ``max_retries``,
        then up to ``batch_poll_max_s`` (an outage is waited out at the polling pace)."""
        if retry_after is not None:
            return min(retry_after, max(self.cfg.batch_poll_max_s, self.cfg.backoff_max_s))
        cap = self.cfg.backoff_max_s if attempt <= self.cfg.max_retries else max(
            self.cfg.backoff_max_s, self.cfg.batch_poll_max_s)
        return random.uniform(0, min(cap, self.cfg.backoff_initial_s * 2 ** (attempt - 1)))

    async def upload(self, content: bytes, name: str) -> tuple[str, float | None]:
        """The id of the uploaded file and its ``created_at`` (server clock; None if not
        given)."""
        import aiohttp

        def body():
            form = aiohttp.FormData()
            form.add_field("purpose", "batch")
            form.add_field("file", content, filename=name, content_type="application/jsonl")
            writer = form()
            # multipart with its boundary: the session's JSON content type must not stick
            return writer, writer.content_type

        answer = await self.call("POST", "/files", body=body, long=True)
        created = answer.get("created_at")
        return answer["id"], float(created) if isinstance(created, (int, float)) else None

    async def create(self, file_id: str, since: float) -> str:
        """Create the batch of ``file_id``; its id. Not blindly retried: a creation whose
        answer was lost may have happened, and a second batch would be paid twice, so each
        retry first looks the batch up (``since``: see :meth:`find_by_input`)."""
        body = {"input_file_id": file_id, "endpoint": ENDPOINT,
                "completion_window": COMPLETION_WINDOW,
                "metadata": {"created_by": "wizardcoder"}}
        attempt, failing_since = 0, None
        while True:
            attempt += 1
            try:
                return (await self.call("POST", "/batches", json=body, retry=False))["id"]
            except Transient as exc:
                failing_since = failing_since or time.monotonic()
                if self.out_of_patience(attempt, failing_since):
                    raise ExternalError(f"{exc}; rerun the stage (the uploaded file is "
                                        "recorded and its batch is looked up first)") from None
                await asyncio.sleep(self.backoff(attempt))
                found = await self.find_by_input(file_id, since)
                if found is not None:
                    return found

    async def find_by_input(self, file_id: str, since: float) -> str | None:
        """The batch created from ``file_id`` whose id was lost (a crash, a lost answer).

        ``GET /batches`` lists newest first; no batch of a file is older than its upload, so
        the pages are read until one reaches a batch created before ``since`` (the upload
        time) -- however many batches the organisation created since, none is missed."""
        after, pages = None, 0
        while True:
            pages += 1
            page = await self.call("GET", "/batches",
                                   params={"limit": 100, **({"after": after} if after else {})})
            data = page.get("data") or []
            for batch in data:
                if batch.get("input_file_id") == file_id:
                    log.info("batch %s of file %s found again (%d page(s) of GET /batches)",
                             batch["id"], file_id, pages)
                    return batch["id"]
            older = any(float(b.get("created_at") or 0) < since for b in data)
            if older or not page.get("has_more") or not data:
                log.info("file %s has no batch (%d page(s) of GET /batches searched back to "
                         "its upload)", file_id, pages)
                return None
            after = data[-1]["id"]

    async def cancel(self, batch_id: str) -> str:
        """Ask the provider to cancel a batch; its status (``cancelling``...)."""
        return str((await self.call("POST", f"/batches/{batch_id}/cancel")).get("status"))

    async def content(self, file_id: str) -> bytes:
        return await self.call("GET", f"/files/{file_id}/content", long=True)
