"""A real gunicorn on a free loopback port: the one server helper of tests and bench/.

Standard library only, so that bench/ runs on requirements.txt alone. It runs the
production `gunicorn.conf.py` (settings through the environment) with
`--no-control-socket`, so that many servers run side by side, and `start` returns
once the ready path answers 200 and every worker has booted. A server dies with the
process that started it (`spawn`): a killed test run leaves no gunicorn behind.
"""

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
# PR_SET_PDEATHSIG signals the child when the *thread* that forked it ends, not the
# process: a server started from a test's short-lived thread would get SIGTERM as that
# thread returned. So every server is forked by this one thread, which lives as long
# as the process does.
_spawner = ThreadPoolExecutor(1, thread_name_prefix="servers-spawner")


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent dies (gunicorn's master stops
    its workers and its sender on SIGTERM). If the parent is gone already, go too."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(127)
    if os.getppid() != parent:
        os._exit(0)


def spawn(command: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(command, **popen)`, as a child that dies with this process."""
    parent = os.getpid()
    return _spawner.submit(
        subprocess.Popen, command, preexec_fn=lambda: _die_with_parent(parent), **popen
    ).result()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """`gunicorn APP` on 127.0.0.1:<free port>, run from `root` (another tree's code,
    for an A/B benchmark, or ours). `workers` defaults to WEB_CONCURRENCY, as there."""

    def __init__(
        self,
        app: str = "wsgi:app",
        env: dict[str, str] | None = None,
        *,
        root: Path = ROOT,
        workers: int | None = None,
        ready_path: str = "/readyz",
        options: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.worker_count = workers or int(self.env.get("WEB_CONCURRENCY", os.cpu_count() or 2))
        self.ready_path = ready_path
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", self.app, "-c", str(self.root / "gunicorn.conf.py"),
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(self.worker_count),
            "--no-control-socket", *self.options,
        ]  # fmt: skip

    def start(self, output: Path | None = None, timeout: float = 60) -> Self:
        """With `output` (a folder), the server's stderr and stdout go to files there."""
        streams: dict[str, Any] = {}
        if output is not None:
            output.mkdir(parents=True, exist_ok=True)
            streams = {
                "stderr": open(output / "stderr", "wb"),
                "stdout": open(output / "stdout", "wb"),
            }
        self.process = spawn(self.command(), cwd=self.root, env=self.env, **streams)
        for stream in streams.values():  # the child has its own copies
            stream.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn {self.app} exited with {self.process.returncode}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn {self.app} was not ready within {timeout} s")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                return response.status == 200 and len(self.workers()) >= self.worker_count
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False  # not listening yet, or busy starting

    def children(self) -> list[int]:
        """The master's child processes: its workers and its notification sender."""
        assert self.process is not None
        children: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):  # the sender's is a
            try:  # thread's child
                children += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                pass
        return children

    def workers(self) -> list[int]:
        """The worker processes' ids."""
        return [pid for pid in self.children() if not _is_sender(pid)]

    def senders(self) -> list[int]:
        """The notification sender's process id, while one runs (incident_rpc/notifier.py)."""
        return [pid for pid in self.children() if _is_sender(pid)]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _is_sender(pid: int) -> bool:
    try:
        return b"incident_rpc.notifier" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
