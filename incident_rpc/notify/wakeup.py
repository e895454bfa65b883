"""The sender's doorbell: a pipe from every worker of an instance to its sender process.

gunicorn's master opens the pipe (`open_pipe`, before it forks anything), so that each
worker inherits the write end and the sender (incident_rpc/notifier.py) is given the
read end. A commit that wrote deliveries writes one byte (`wake_sender`); the sender
wakes at once instead of at its next poll. The write end does not block: when the
pipe is full the sender has bytes enough to read, and when no pipe was opened (one
process, the tests' in-process app) there is no sender to wake.
"""

import os

_pipe: tuple[int, int] | None = None  # (read end, write end)


def open_pipe() -> int:
    """In gunicorn's master: open the pipe; its read end, for the sender."""
    global _pipe
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    _pipe = (read_end, write_end)
    return read_end


def close_read_end() -> None:
    """In a worker: only the sender reads."""
    if _pipe is not None:
        os.close(_pipe[0])


def wake_sender() -> None:
    if _pipe is None:
        return
    try:
        os.write(_pipe[1], b".")
    except (BlockingIOError, BrokenPipeError):
        pass  # full: the sender has yet to read what woke it; or no sender reads
