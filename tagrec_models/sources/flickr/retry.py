"""Retry timing shared by API calls and image downloads: exponential back-off with jitter,
and ``Retry-After`` honoured.

The delay before attempt ``n + 1`` is ``d = min(max_delay_s, base_delay_s * 2 ** (n - 1))``
drawn with "equal jitter", uniformly in ``[d / 2, d]``: half of it keeps the back-off
exponential, the random half keeps many clients from retrying in lock-step. When the server
sent ``Retry-After`` the wait is at least that long; a ``Retry-After`` beyond
``max_retry_after_s`` is not waited out but reported, because a crawl that sleeps for hours
inside one call is worse than one that stops and resumes later.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


class RetryAfterTooLong(Exception):
    def __init__(self, seconds: float, limit: float) -> None:
        self.seconds = seconds
        super().__init__(f"server asked to retry after {seconds:.0f}s, more than the {limit:.0f}s allowed")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a transient failure. ``seed`` seeds the jitter."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 120.0
    max_retry_after_s: float = 3600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError(
                "RetryPolicy needs 0 <= base_delay_s <= max_delay_s, got "
                f"{self.base_delay_s} and {self.max_delay_s}"
            )

    def rng(self) -> random.Random:
        return random.Random(self.seed)

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        wait = ceiling / 2.0 + rng.uniform(0.0, ceiling / 2.0)
        if retry_after is not None:
            if retry_after > self.max_retry_after_s:
                raise RetryAfterTooLong(retry_after, self.max_retry_after_s)
            wait = max(wait, retry_after)
        return wait


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (RFC 9110 10.2.3: delay-seconds or an HTTP-date); ``None``
    when absent or unreadable (then the plain back-off applies)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())
