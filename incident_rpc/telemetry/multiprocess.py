"""prometheus-client's multiprocess mode under gunicorn: the directory the workers share.

prometheus-client picks its mode when it is first imported, from
PROMETHEUS_MULTIPROC_DIR; gunicorn's master sets it (gunicorn.conf.py) before any
worker is forked, so every worker writes its values into files there, and must not
import prometheus_client before (this module does not). The directory is emptied at
start-up: files left by an earlier run would add its counts to this one's. Without
PROMETHEUS_MULTIPROC_DIR, a directory of this run's own is made, and removed at exit.
When a worker exits its live gauges are dropped (`mark_dead`).
"""

import shutil
import sys
import tempfile
from pathlib import Path


def prepare(configured: str | None) -> str:
    """The directory to use, emptied (or made); call before any worker starts."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its directory was set")
    if configured is None:
        return tempfile.mkdtemp(prefix="incident_rpc_metrics_")
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # only prometheus-client's files, whatever else is there
        stale.unlink()
    return str(path)


def mark_dead(pid: int) -> None:
    from prometheus_client import multiprocess  # after the directory is set

    multiprocess.mark_process_dead(pid)


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
