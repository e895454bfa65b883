"""Slow C calls that release the GIL, kept off a gevent worker's loop.

A password hash (scrypt) takes about 80 ms of CPU here. Under gevent workers
(gunicorn.conf.py) a call made inline stops every greenlet of the worker for
that long: every API request and every WebSocket subscriber of that process.
`run` hands such a call to gevent's pool of real threads, where it runs beside
the loop (and beside another one, on another core); without gevent it just calls.
"""

from collections.abc import Callable
from typing import Any


def run(function: Callable[..., Any], *args: Any) -> Any:
    try:
        from gevent import get_hub, monkey
    except ImportError:  # pragma: no cover  (gevent is in requirements.txt)
        return function(*args)
    if not monkey.is_module_patched("threading"):
        return function(*args)
    return get_hub().threadpool.apply(function, args)
