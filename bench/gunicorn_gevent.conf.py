"""Bench only: the production gunicorn.conf.py, plus psycogreen under gevent workers.

psycopg2 blocks in C, so without psycogreen's wait callback one slow query stops
every greenlet of a worker. If the production config (or the app) already
installs a wait callback, this adds nothing.
"""

from pathlib import Path

_production = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
exec(compile(_production.read_text(), str(_production), "exec"))

_production_post_worker_init = globals().get("post_worker_init")


def post_worker_init(worker):  # noqa: F811  (chains the production hook, if any)
    import psycopg2.extensions
    from psycogreen.gevent import patch_psycopg

    if _production_post_worker_init:
        _production_post_worker_init(worker)
    if psycopg2.extensions.get_wait_callback() is None:
        patch_psycopg()
