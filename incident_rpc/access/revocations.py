"""How many API-key revocations this instance has committed: the signal by which every
worker drops the key checks it keeps (access/keys.py).

The count lives in shared memory made when this module is first imported. gunicorn's
config imports it in the master, before any worker is forked, so that all the
instance's workers read and bump the same count; anywhere else (one process, the
tests' in-process app) it is that process's own. Its value means nothing, only its
changes: a read-modify-write that loses a concurrent bump still changes it.
"""

import multiprocessing

_COUNT = multiprocessing.RawValue("Q", 0)


def count() -> int:
    return _COUNT.value


def bump() -> None:
    _COUNT.value = (_COUNT.value + 1) % 2**64
