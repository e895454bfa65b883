"""The suite's own server helper (tests/servers.py): a server dies with the process
that started it, so a killed test run leaves no gunicorn behind, even one started
from a thread that has since ended."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from support import ROOT, wait_for

STARTER = textwrap.dedent(
    """
    import json, os, sys, threading
    sys.path.insert(0, "tests")
    from support import Server, wait_for

    servers, threads = [], []
    def start():
        threads.append(threading.get_native_id())
        servers.append(Server(sys.argv[1], sys.argv[2], workers=1).start())

    starter = threading.Thread(target=start)
    starter.start()
    starter.join()
    gone = lambda: not os.path.exists(f"/proc/self/task/{threads[0]}")
    wait_for(gone, 10, "the starting thread did not end")
    # A server told to stop by the thread's end would be gone before a second one is up
    # (a stop takes under 2 s, a start over 2 s), and the check would fail.
    second = Server(sys.argv[1], sys.argv[2] + "/second", workers=1).start()
    for server in (*servers, second):
        server.rpc("whoami", expect=401)
        assert server.process.poll() is None
    pids = [pid for s in (*servers, second) for pid in (s.process.pid, *s.children())]
    print(json.dumps(pids), flush=True)
    sys.stdin.read()  # until killed
    """
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    pids: list[int] = []
    with subprocess.Popen(
        [sys.executable, "-c", STARTER, f"sqlite:///{tmp_path / 'db.sqlite3'}", str(tmp_path)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ,
    ) as starter:  # fmt: skip
        try:
            line = starter.stdout.readline()
            assert line, "the starter failed: did its first server stop with its thread?"
            pids = json.loads(line)
            assert len(pids) == 4 and all(map(alive, pids))  # two masters, a worker each
            starter.send_signal(signal.SIGKILL)  # no cleanup of its own runs
            starter.wait(10)
            wait_for(lambda: not any(map(alive, pids)), 20, f"gunicorn {pids} outlived its parent")
        finally:
            starter.kill()
            for pid in filter(alive, pids):  # a failure here leaves no orphan either
                os.kill(pid, signal.SIGKILL)
