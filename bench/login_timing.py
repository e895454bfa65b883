"""Does a wrong username answer as fast as a wrong password? Measure both, side by side.

    python bench/login_timing.py                       # a throwaway SQLite database
    python bench/login_timing.py --postgres postgresql://postgres@127.0.0.1/postgres

Starts a real gunicorn (the production gunicorn.conf.py, 2 workers) with login
throttling ON, as in production. Each attempt comes from its own address
(X-Forwarded-For, PROXY_FIX_X_FOR=1), so the throttle does all its work (check,
count, sweep) without ever refusing. The two kinds of attempt are interleaved in
a shuffled order so that drift in the machine's load hits both alike. Prints
mean, median, p95 and standard deviation of each, and Welch's t for the means.
"""

import argparse
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support import PostgresDatabases, Server  # noqa: E402  (the test suite's launcher)

PASSWORD = "timing-password-123"


def attempt(server: Server, username: str, password: str) -> float:
    address = "10.{}.{}.{}".format(*(random.randrange(1, 255) for _ in range(3)))
    body = {"action": "authorization", "username": username, "password": password}
    started = time.perf_counter()
    response = server.post("/rpc", body, headers={"X-Forwarded-For": address})
    elapsed = time.perf_counter() - started
    if response.status_code != 401:
        raise SystemExit(f"expected 401, got {response.status_code}: {response.text}")
    return elapsed * 1000


def measure(server: Server, rounds: int, username: str) -> dict[str, list[float]]:
    kinds = ["wrong username", "wrong password"] * rounds
    random.shuffle(kinds)
    times: dict[str, list[float]] = {"wrong username": [], "wrong password": []}
    for kind in kinds:
        if kind == "wrong username":
            times[kind].append(attempt(server, f"nobody-{secrets.token_hex(4)}", PASSWORD))
        else:
            times[kind].append(attempt(server, username, "not-the-password"))
    return times


def report(times: dict[str, list[float]]) -> None:
    print(f"{'':16}{'n':>6}{'mean':>10}{'median':>10}{'p95':>10}{'stdev':>10}   (ms)")
    for kind, values in times.items():
        p95 = statistics.quantiles(values, n=20)[-1]
        print(
            f"{kind:16}{len(values):6d}{statistics.fmean(values):10.2f}"
            f"{statistics.median(values):10.2f}{p95:10.2f}{statistics.stdev(values):10.2f}"
        )
    a, b = times.values()
    difference = statistics.fmean(a) - statistics.fmean(b)
    error = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    print(f"difference of means: {difference:+.2f} ms; Welch t = {difference / error:+.2f}")
    print("|t| < 2: no difference the measurement can tell apart from noise")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="attempts of each kind")
    parser.add_argument("--postgres", metavar="URL", help="run on a throwaway database there")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="login-timing-"))
    databases = PostgresDatabases(args.postgres) if args.postgres else None
    url = databases.create() if databases else f"sqlite:///{scratch / 'timing.sqlite3'}"
    server = Server(
        url, scratch / "instance", workers=2,
        LOGIN_MAX_FAILURES="5", LOGIN_MAX_FAILURES_PER_ADDRESS="30", PROXY_FIX_X_FOR="1",
    )  # fmt: skip
    server.start()
    try:
        admin = server.login()
        username = f"timing-{secrets.token_hex(3)}"
        server.rpc("user_create", admin, username=username, password=PASSWORD, expect=201)
        measure(server, 20, username)  # warm-up: connections, caches, imports
        print(f"database: {url.split('://')[0]}, {args.rounds} attempts of each kind")
        report(measure(server, args.rounds, username))
    finally:
        server.stop()
        if databases:
            databases.drop_all()


if __name__ == "__main__":
    main()
