"""Credential checks a worker keeps, and the signal that ends them: how many revocations
this instance has committed.

A worker keeps the API keys it found live (access/keys.py) and the users its tokens
name (access/auth.py) for a second or so, so that a stream of requests with one
credential does not read the same row for each. A command that changes credentials
(an action declared `revokes`: logout, password_change, user_update, key_revoke) marks
its transaction; once that commits, the count changes, and every check kept with an
older count is read again: from the next request on, in every worker of the instance.
Another instance on the same database, or an UPDATE by hand, is seen within the
check's cache time.

The count lives in shared memory made when this module is first imported. gunicorn's
config imports it in the master, before any worker is forked, so that all the
instance's workers read and bump the same count; anywhere else (one process, the
tests' in-process app) it is that process's own. Its value means nothing, only its
changes: a read-modify-write that loses a concurrent bump still changes it.
"""

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

from flask import current_app
from sqlalchemy.orm import Session

from incident_rpc.extensions import db

_COUNT = multiprocessing.RawValue("Q", 0)
_REVOKING = "incident_rpc.revoking"  # session.info: a revocation not yet committed
KEPT_AT_MOST = 4096  # checks kept per process and kind; past it they are all read again


def kept(kind: str, key: Any, ttl: float, read: Callable[[], Any]) -> Any:
    """What `read()` answers for `key`, kept by this process for `ttl` seconds (in
    app.extensions[kind]) unless a revocation commits meanwhile. None (nothing found)
    is never kept, nor what a transaction that revokes reads (its own change)."""
    checks: dict[Any, Any] = current_app.extensions.setdefault(kind, {})
    # Stamped with the count read before `read()`: a revocation committed after this
    # read changes the count, and so ends the entry, whatever `read()` saw.
    count, now = _COUNT.value, time.monotonic()
    revoking = _REVOKING in db.session().info
    if not revoking:
        hit = checks.get(key)
        if hit is not None and hit[1] == count and hit[2] > now:
            return hit[0]
    found = read()
    if found is not None and ttl > 0 and not revoking:
        if len(checks) >= KEPT_AT_MOST:
            checks.clear()
        checks[key] = (found, count, now + ttl)
    return found


def revoking(session: Session) -> None:
    """This session's transaction changes credentials: `committed` tells every worker."""
    session.info[_REVOKING] = True


def committed(session: Session) -> None:
    """After a commit (a batch's: its own, not a savepoint's): if it changed credentials,
    every worker's kept checks are stale."""
    if session.info.pop(_REVOKING, None):
        _COUNT.value = (_COUNT.value + 1) % 2**64
