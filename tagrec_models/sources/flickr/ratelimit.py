"""A token-bucket rate limiter for the Flickr API (Flickr allows 3,600 calls an hour per key).

Tokens accrue continuously at ``rate_per_hour / 3600`` per second up to ``capacity``; each
call takes one token and waits, if none is there, exactly as long as the missing fraction
takes to accrue. With ``capacity = 1`` calls are spaced evenly (one a second at the default
rate), so no sliding hour ever holds more than ``rate_per_hour + capacity - 1`` calls.

Clock and sleep are injected so tests run on a fake clock in no time.
"""

from __future__ import annotations

import time
from typing import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

# With a real clock ``sleep`` can return a hair early; a few extra rounds absorb that. A clock
# that never advances is a bug in the caller and must not hang the crawl.
_MAX_WAIT_ROUNDS = 100


class TokenBucket:
    """Token bucket: ``acquire()`` blocks until one call is allowed and returns the seconds it
    waited."""

    def __init__(
        self,
        rate_per_hour: float,
        capacity: float = 1.0,
        *,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        if not rate_per_hour > 0:
            raise ValueError(f"rate_per_hour must be > 0, got {rate_per_hour!r}")
        if not capacity >= 1:
            raise ValueError(f"capacity must be >= 1 (one call needs one token), got {capacity!r}")
        self.rate_per_s = float(rate_per_hour) / 3600.0
        self.capacity = float(capacity)
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._tokens = self.capacity  # a fresh client may call at once
        self._stamp = self._clock()
        self.waited_s = 0.0

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
        self._stamp = now

    def acquire(self) -> float:
        waited = 0.0
        self._refill()
        for _ in range(_MAX_WAIT_ROUNDS):
            if self._tokens >= 1.0 - 1e-9:
                self._tokens -= 1.0
                self.waited_s += waited
                return waited
            wait = (1.0 - self._tokens) / self.rate_per_s
            self._sleep(wait)
            waited += wait
            self._refill()
        raise RuntimeError(
            f"rate limiter waited {_MAX_WAIT_ROUNDS} times without the clock advancing; "
            "the injected clock and sleep do not agree"
        )
