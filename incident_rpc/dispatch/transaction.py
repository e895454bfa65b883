"""The one commit step, and the shared transaction of a batch.

A command's changes and the events that describe them are committed together:
`commit` writes the pending events (journal.write_pending) and the notification
deliveries they call for (notify.outbox), commits, and then rings the doorbell
(fanout.pass_on) so that every subscriber hears of them, and wakes the sender. In a
batch's shared transaction (`shared`) a command's commit is only its savepoint's:
the events wait for the batch's own commit, and are passed on after it.
Nothing here hangs on SQLAlchemy's Session events: every commit of a command
goes through these functions, in this order.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from incident_rpc.access import revocations
from incident_rpc.events import fanout, journal
from incident_rpc.extensions import db
from incident_rpc.notify import outbox, wakeup

_OPTIONS = {"expire_on_commit": False}  # as db.session's own (extensions.py)


def commit() -> None:
    """Write the command's events, commit its changes with them, then pass them on."""
    session = db.session()
    notifies = outbox.write_deliveries(session, journal.write_pending(session))
    session.commit()
    if notifies:  # (in a batch, before its own commit: the sender looks again soon)
        wakeup.wake_sender()
    if not journal.in_outer_transaction(session):
        revocations.committed(session)
        _pass_on(session)


def changes_credentials() -> None:
    """The command being run changes credentials (its action `revokes`): once its
    transaction commits, every worker reads the credentials it kept again."""
    revocations.revoking(db.session())


def rollback() -> None:
    """Undo the command (in a batch: back to its savepoint) and forget its events."""
    session = db.session()
    session.rollback()
    journal.forget_pending(session)


def _pass_on(session: Session) -> None:
    chunks = journal.take_recorded(session)
    if chunks:
        fanout.pass_on(chunks)


@contextmanager
def shared() -> Iterator[Connection]:
    """Give `db.session` to one transaction that only this function commits.

    The session joins it in "create_savepoint" mode (SQLAlchemy's recipe for
    joining an external transaction), so `db.session.commit()` and `rollback()`
    act on a savepoint, whoever calls them. A plain Session: Flask-SQLAlchemy's
    own would pick the engine over the connection it is given.
    """
    connection = db.engine.connect()
    try:
        outer = connection.begin()
        db.session.remove()
        joined = Session(connection, join_transaction_mode="create_savepoint", **_OPTIONS)
        db.session.registry.set(joined)
        yield connection
        db.session.remove()
        outer.commit()
        revocations.committed(joined)
        _pass_on(joined)  # what its savepoints wrote
    finally:
        db.session.remove()
        connection.close()  # rolls back whatever was not committed
