"""The notification sender's process: started and kept running by gunicorn's master.

The sender posts webhooks and Telegram messages and records every attempt; in a worker
it would share that worker's interpreter lock and CPU with the requests it serves, and
every create would wait behind it. In a process of its own, at a lower priority
(NOTIFY_SENDER_NICE), it takes what the workers leave and catches up when they idle.

`Supervisor` runs in the master (gunicorn.conf.py): it opens the workers' doorbell
(notify/wakeup.py), starts `python -m incident_rpc.notifier` with the pipe's read end,
starts it again a second after it exits, and stops it when the master exits. The
process (`main`) wakes its sender at every byte on the pipe, and ends on SIGTERM
(giving back what it claimed but did not start) or when its master is gone.
"""

import logging
import os
import select
import signal
import subprocess
import sys
import threading

from incident_rpc.notify import wakeup

log = logging.getLogger("incident_rpc")
WAKE_FD = "NOTIFY_WAKE_FD"  # the environment variable naming the pipe's read end
MASTER = "NOTIFY_MASTER_PID"  # and the one naming the process whose child it must stay
RESTART_DELAY = 1.0  # seconds after an exit: a sender that cannot start does not spin
CHECK_EVERY = 0.2  # seconds between two looks at whether it still runs
STOP_TIMEOUT = 8.0  # seconds for the attempts under way, inside gunicorn's graceful 10


class Supervisor:
    def __init__(self) -> None:
        self.read_end = wakeup.open_pipe()
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._keep_running, name="notifier", daemon=True).start()

    def _keep_running(self) -> None:
        env = {**os.environ, WAKE_FD: str(self.read_end), MASTER: str(os.getpid())}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # its metrics are the workers' to keep
        os.set_inheritable(self.read_end, True)
        while not self._stopping.is_set():
            # close_fds=False, no pass_fds: subprocess then spawns with posix_spawn, whose
            # parent waits for the exec in the kernel. A fork-and-exec reports the exec
            # through a pipe instead, and a worker forked by the master meanwhile kept
            # that pipe open: the start hung until the worker exited.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "incident_rpc.notifier"], env=env, close_fds=False
            )
            # Polled, not waited for: gunicorn's master reaps every child (waitpid(-1)),
            # and a thread blocked in waitpid for this one then slept on until some other
            # child changed state. poll() takes that for an exit (code 0).
            while self.process.poll() is None and not self._stopping.wait(CHECK_EVERY):
                pass
            if not self._stopping.is_set():
                log.warning("the notification sender exited; starting it again")
                self._stopping.wait(RESTART_DELAY)

    def stop(self) -> None:
        self._stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT + 1)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    from incident_rpc import create_app
    from incident_rpc.notify.sender import Sender

    # Named by the master, not read from getppid(): a master killed before this line
    # would leave us the child of init, and init would pass for our master.
    master = int(os.environ[MASTER])
    wake_fd = int(os.environ[WAKE_FD])
    # What else the master let us inherit (its listening socket, above all) is not ours
    # to hold: the port would stay taken while we outlive a killed master.
    os.closerange(3, wake_fd)
    os.closerange(wake_fd + 1, os.sysconf("SC_OPEN_MAX"))
    app = create_app()
    os.nice(app.config["NOTIFY_SENDER_NICE"])
    sender = Sender(app)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the master, which stops us
    while not stopping.is_set() and os.getppid() == master:
        readable, _, _ = select.select([wake_fd], [], [], 1.0)
        if readable:
            if not os.read(wake_fd, 65536):
                break  # every write end is closed: the master and its workers are gone
            sender.wanted.set()
    sender.stop(STOP_TIMEOUT)


if __name__ == "__main__":
    main()
