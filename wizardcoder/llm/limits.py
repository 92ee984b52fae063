"""What bounds a batch of LLM calls: request/token rate limits and a spending cap.

Both are shared by every worker of one ``chat_many`` call (the rate limiter) or by every
call of one unit of work, such as an evolution round (the budget), so they live apart from
the transport and retry code in :mod:`wizardcoder.llm.client`.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from dataclasses import dataclass
from typing import Any

from wizardcoder.errors import WizardcoderError


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    headers = headers or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers.get(name)) * scale)
        except (TypeError, ValueError):
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimiter:
    """Token buckets for requests and tokens per minute, plus a shared pause after a 429.

    Buckets hold ten seconds' worth so a fresh run does not burst a whole minute's quota
    (providers enforce limits on sub-minute windows). A request may take the token bucket
    below zero, so long-run throughput is exact even for requests larger than the bucket.
    """

    def __init__(self, requests_per_minute: int, tokens_per_minute: int):
        self.rpm, self.tpm = requests_per_minute, tokens_per_minute
        self._req_cap = max(1.0, self.rpm / 6)
        self._tok_cap = max(1.0, self.tpm / 6)
        self._req, self._tok = self._req_cap, self._tok_cap
        self._last = time.monotonic()
        self._pause_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def _refill(self, now: float) -> None:
        elapsed, self._last = now - self._last, now
        if self.rpm:
            self._req = min(self._req_cap, self._req + elapsed * self.rpm / 60)
        if self.tpm:
            self._tok = min(self._tok_cap, self._tok + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int) -> None:
        if not (self.rpm or self.tpm or self._pause_until):
            return  # unlimited and never paused: no lock round-trip per request
        async with self._lock:  # FIFO-ish: one waiter at a time computes its turn
            while True:
                now = time.monotonic()
                self._refill(now)
                wait = self._pause_until - now
                if self.rpm and self._req < 1:
                    wait = max(wait, (1 - self._req) * 60 / self.rpm)
                need = min(tokens, self._tok_cap)
                if self.tpm and self._tok < need:
                    wait = max(wait, (need - self._tok) * 60 / self.tpm)
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.rpm:
                self._req -= 1
            if self.tpm:
                self._tok -= tokens


@dataclass(frozen=True)
class Prices:
    """USD per million tokens (``llm.price_per_million_*``); zero means 'not priced'."""

    prompt_per_million: float = 0.0
    completion_per_million: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_million
                + completion_tokens * self.completion_per_million) / 1e6

    @property
    def free(self) -> bool:
        return not (self.prompt_per_million or self.completion_per_million)


def usd(value: float) -> str:
    """Dollars with enough digits to see sub-cent spend."""
    return f"${value:,.2f}" if value >= 100 else f"${value:.4f}"


class BudgetExceeded(WizardcoderError):
    """New requests were refused because they could take spending past the cap."""

    def __init__(self, budget: Budget, step: str, unanswered: int, worst_left_usd: float):
        self.spent_usd, self.cap_usd = budget.spent_usd, budget.cap_usd
        self.unanswered, self.worst_left_usd = unanswered, worst_left_usd
        super().__init__(
            f"{step}: budget cap reached, {unanswered} request(s) not sent. Spent "
            f"{usd(budget.spent_usd)} on this {budget.scope} ({usd(budget.sent_usd)} sent "
            f"now, {usd(budget.cached_usd)} answered from the request cache, paid earlier); "
            f"the requests left in this step would cost up to {usd(worst_left_usd)} more "
            f"(estimate: prompt chars/4 + max_tokens); cap {budget.param} = "
            f"{usd(budget.cap_usd)}. Every answer so far is in the request cache: rerun with "
            f"a higher {budget.param} to resume; no finished call is repeated.")


class Budget:
    """Spending cap shared by several ``chat_many`` calls (e.g. the steps of one round).

    Spend = answers sent now (their reported usage) + answers taken from the request cache
    (their recorded usage: paid once, earlier), so rerunning with the same cap makes no new
    spend and the cap bounds the whole unit of work, not each run. Before a request is sent
    its worst case (estimated prompt tokens + max_tokens) is reserved; a request whose
    reservation would take spend + reservations past the cap is not sent, nor is anything
    after it, while requests already in flight finish and are cached. ``cap_usd`` 0 means
    no cap (spend is still counted).
    """

    def __init__(self, cap_usd: float, prices: Prices, *, param: str = "budget_usd",
                 scope: str = "run"):
        self.cap_usd, self.prices, self.param, self.scope = cap_usd, prices, param, scope
        self.sent_usd = 0.0
        self.cached_usd = 0.0
        self.reserved_usd = 0.0
        self.stopped = False

    @property
    def spent_usd(self) -> float:
        return self.sent_usd + self.cached_usd

    def worst_case(self, prompt_tokens_est: int, max_tokens: int) -> float:
        return self.prices.cost(prompt_tokens_est, max_tokens)

    def charge_cached(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.cached_usd += self.prices.cost(prompt_tokens, completion_tokens)

    def reserve(self, amount: float) -> bool:
        """Hold ``amount`` for a request about to be sent; False (and stop) past the cap."""
        if self.stopped:
            return False
        if self.cap_usd > 0 and self.spent_usd + self.reserved_usd + amount > self.cap_usd:
            self.stopped = True
            return False
        self.reserved_usd += amount
        return True

    def settle(self, reserved: float, prompt_tokens: int, completion_tokens: int) -> None:
        """Replace a reservation with what the answer actually cost."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.sent_usd += self.prices.cost(prompt_tokens, completion_tokens)

    def release(self, reserved: float) -> None:
        """A request that failed for good costs nothing we know of."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
