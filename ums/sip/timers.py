"""SIP timer values (RFC 3261 §17 and Table 4 of Appendix A).

What it does
------------
:class:`TimerSettings` holds T1, T2 and T4 and derives every transaction timer (A..K) from
them, for an unreliable (UDP) or reliable (TCP) transport.

How it works
------------
Plain arithmetic on the three base values.  On a reliable transport the retransmission timers
(A, E, G) are off (``None``) and the "wait for retransmissions" timers (D, I, J, K) are zero,
as RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1 and §17.2.2 require.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["T1", "T2", "T4", "TimerSettings"]

#: RFC 3261 §17.1.1.1 / Table 4: "T1  500ms default  RTT Estimate".
T1 = 0.5
#: RFC 3261 Table 4: "T2  4s  The maximum retransmit interval for non-INVITE requests and INVITE
#: responses".
T2 = 4.0
#: RFC 3261 Table 4: "T4  5s  Maximum duration a message will remain in the network".
T4 = 5.0


@dataclass(frozen=True)
class TimerSettings:
    """The three RFC 3261 base timers; everything else is derived (Table 4)."""

    t1: float = T1
    t2: float = T2
    t4: float = T4

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers must satisfy 0 < T1 <= T2")
        if self.t4 <= 0:
            raise ValueError("T4 must be positive")

    @property
    def transaction_timeout(self) -> float:
        """Timers B, F, H and J (unreliable): 64*T1 (RFC 3261 Table 4)."""
        return 64 * self.t1

    def timer_a(self, reliable: bool) -> float | None:
        """INVITE request retransmit interval, initially T1, for UDP only (§17.1.1.2)."""
        return None if reliable else self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits: "> 32s for UDP, 0s for TCP/SCTP" (Table 4)."""
        return 0.0 if reliable else max(32.0, self.transaction_timeout)

    def timer_e(self, reliable: bool) -> float | None:
        """Non-INVITE request retransmit interval, initially T1, UDP only (§17.1.2.2)."""
        return None if reliable else self.t1

    def timer_g(self, reliable: bool) -> float | None:
        """INVITE response retransmit interval, initially T1, UDP only (§17.2.1)."""
        return None if reliable else self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits: "T4 for UDP, 0s for TCP/SCTP" (Table 4)."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits: "64*T1 for UDP, 0s for TCP/SCTP"."""
        return 0.0 if reliable else self.transaction_timeout

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits: "T4 for UDP, 0s for TCP/SCTP" (Table 4)."""
        return 0.0 if reliable else self.t4
