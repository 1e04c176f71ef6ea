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


class TokenBucket:
    """Token bucket: ``acquire()`` blocks until one call is allowed and returns the seconds it
    waited.

    Kept as the equivalent "generic cell rate algorithm" (ITU-T I.371): a theoretical arrival
    time ``tat`` advances by one interval per call, and a call may go once
    ``now >= tat - (capacity - 1) * interval``. The wait is computed once rather than polled,
    so no float round-off can make it spin.
    """

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
        self.interval_s = 3600.0 / float(rate_per_hour)
        self.capacity = float(capacity)
        self._tolerance = (self.capacity - 1.0) * self.interval_s
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._tat = self._clock()  # a fresh bucket is full
        self.waited_s = 0.0

    def acquire(self) -> float:
        now = self._clock()
        tat = max(self._tat, now)
        wait = max(0.0, tat - self._tolerance - now)
        if wait > 0.0:
            self._sleep(wait)  # time.sleep never returns early (PEP 475)
        self._tat = tat + self.interval_s
        self.waited_s += wait
        return wait
