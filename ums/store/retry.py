"""When to try a failed delivery again, and when to stop and tell the admin.

What it does
------------
:class:`RetryPolicy` answers two questions for a message whose delivery
failed with a temporary error: ``next_attempt(now, attempts, rng)`` — when to
try again — and ``gives_up(received_at, now)`` — whether it has waited long
enough that the admin must hear about it.

How it works
------------
Exponential backoff: the n-th retry waits ``first * factor**(n-1)`` seconds,
capped at ``cap`` (defaults 1 min, doubling, at most 1 h: 1, 2, 4, ..., 32, 60,
60, ... minutes).  A jitter of ±``jitter`` (a fraction) drawn from the random
generator the caller passes spreads retries of many messages that failed
together (a smarthost outage) so they do not return in one burst.  RFC 5321
§4.5.4.1 asks for a retry interval of at least 30 minutes for a queue and a
give-up time of at least 4-5 days; our first retries are faster because the
smarthost is usually our own, and ``give_up_after`` defaults to 5 days.

Giving up does not delete anything: the record is marked failed and kept, the
files stay in the spool, and a report goes to the admin.

Pure: time and randomness come in as arguments.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    #: seconds before the first retry
    first: float = 60.0
    #: growth of the wait per further retry
    factor: float = 2.0
    #: longest wait between two attempts, seconds
    cap: float = 3600.0
    #: relative jitter, 0.1 = ±10 %
    jitter: float = 0.1
    #: RFC 5321 §4.5.4.1: "the give-up time generally needs to be at least 4-5 days"
    give_up_after: timedelta = timedelta(days=5)

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first:
            raise ValueError("need 0 < first <= cap")
        if self.factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.give_up_after <= timedelta(0):
            raise ValueError("give_up_after must be positive")

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after ``attempts`` failed attempts (``attempts >= 1``)."""
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        # stop growing once the cap is reached: factor**n would overflow for large n
        steps = attempts - 1
        if self.factor > 1:
            steps = min(steps, math.ceil(math.log(self.cap / self.first, self.factor)))
        base = min(self.cap, self.first * self.factor**steps)
        if self.jitter:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)

    def next_attempt(self, now: datetime, attempts: int, rng: random.Random) -> datetime:
        """When to try again after ``attempts`` failed attempts."""
        return now + timedelta(seconds=self.delay(attempts, rng))

    def gives_up(self, received_at: datetime, now: datetime) -> bool:
        """True once a message has waited ``give_up_after`` since it arrived."""
        return now - received_at >= self.give_up_after
