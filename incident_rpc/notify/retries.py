"""What an attempt's outcome means for its delivery: done, again later, or failed.

2xx is done. 410 Gone fails it and disables the channel (the receiver says it will
never want more). 429, 5xx and no answer at all (a timeout, a refused connection)
try again after the schedule's next delay, with jitter, and never before the
receiver's Retry-After; after the schedule's last delay the delivery fails. A refusal
of the address (addresses.py) and every other status fail at once: sending the same
request again would get the same answer.
"""

import random
from dataclasses import dataclass

from incident_rpc.notify.post import Outcome

MAX_RETRY_AFTER = 24 * 3600.0  # seconds; a receiver cannot park a delivery for longer
JITTER = 0.2  # each delay is moved by up to this fraction, either way


@dataclass(frozen=True)
class Verdict:
    state: str  # "delivered", "pending" (again after `delay`) or "failed"
    delay: float = 0.0
    disable: bool = False


def retryable(outcome: Outcome) -> bool:
    if outcome.status is None:
        return not (outcome.error or "").startswith("refused")
    return outcome.status == 429 or outcome.status >= 500


def decide(outcome: Outcome, tries: int, schedule: tuple[float, ...]) -> Verdict:
    """`tries`: attempts made in this round, this one included."""
    if outcome.status is not None and 200 <= outcome.status < 300:
        return Verdict("delivered")
    if outcome.status == 410:
        return Verdict("failed", disable=True)
    if not retryable(outcome) or tries > len(schedule):
        return Verdict("failed")
    delay = schedule[tries - 1] * random.uniform(1 - JITTER, 1 + JITTER)
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    return Verdict("pending", delay)
