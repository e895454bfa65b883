"""What /metrics costs: `create` at 16 connections with METRICS_ENABLED on and off.

Two servers of this tree side by side on one throwaway PostgreSQL database, the same
production gunicorn config, differing only in METRICS_ENABLED. wrk drives them in
turns, the order swapped every round (so that whatever the run before leaves behind,
a checkpoint or an autovacuum, falls on both alike), while a scraper reads /metrics
of the metered one every `--scrape-every` seconds, through both turns, as Prometheus
would. The default is Prometheus's own default interval, 15 s; the bench also runs
with a scrape every second, 15 times that, as a harsher case (a list: one phase per
interval; 0 is no scraper at all).

Besides requests/s, each round notes the CPU time the serving workers spent per
request (/proc/<pid>/stat): on a machine shared with other work requests/s of two
runs seconds apart differ by a fifth, CPU per request far less. And the metered
server's CPU while the other one runs: what its scrapes cost, with nothing else to do.
Target: requests/s with metrics at least 0.95x of without, at each interval.

    python bench/metrics_cost.py [--rounds 15] [--seconds 3] [--connections 16]
                                 [--scrape-every 15,1]
"""

import argparse
import statistics
import sys
import threading
import urllib.request
from typing import Any

from harness import (
    ADMIN,
    DEFAULT_ADMIN_URL,
    Database,
    Gunicorn,
    instance_dir,
    summarise,
    wrk,
)
from lifecycle import cpu_seconds

TARGET = 0.95


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--scrape-every", default="15,1", help="seconds between scrapes, a list (0: none)"
    )
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    return parser.parse_args(argv)


def scrape(url: str, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            response.read()


def in_turns(args: argparse.Namespace, on: Gunicorn, off: Gunicorn, body: Any) -> dict[str, Any]:
    """`args.rounds` pairs of runs, off and on, the order swapped every round: medians of
    the runs, and of each pair's ratios (a pair seconds apart sees the same machine)."""
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    idle_on: list[float] = []  # the metered server's CPU per second while the other runs
    servers = {"off": off, "on": on}
    for index in range(args.rounds):
        for label in ("off", "on") if index % 2 == 0 else ("on", "off"):
            other = servers["on" if label == "off" else "off"]
            before, other_before = cpu_seconds(servers[label]), cpu_seconds(other)
            run = wrk(servers[label].url + "/rpc", body, args.connections, args.seconds)
            spent = cpu_seconds(servers[label]) - before
            run["cpu_ms_per_request"] = spent * 1000 / max(run["requests"], 1)
            if label == "off":
                idle_on.append((cpu_seconds(other) - other_before) * 1000 / run["seconds"])
            runs[label].append(run)
    result: dict[str, Any] = {"runs": runs, "scrape_cpu_ms_per_s": statistics.median(idle_on)}
    for label, done in runs.items():
        result[label] = summarise(done, ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request"))
    pairs = list(zip(runs["off"], runs["on"], strict=True))
    for key in ("rps", "p99_ms", "cpu_ms_per_request"):
        result[f"{key}_ratio"] = statistics.median(on[key] / off[key] for off, on in pairs)
    return result


def show(title: str, result: dict[str, Any]) -> list[bool]:
    off, on = result["off"], result["on"]
    print(f"\n{title}\n  {'':12}{'off':>10}{'on':>10}{'ratio':>9}")
    for name, key in (("req/s", "rps"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
                      ("cpu ms/req", "cpu_ms_per_request")):  # fmt: skip
        ratio = result.get(f"{key}_ratio", on[key] / off[key])
        print(f"  {name:12}{off[key]:10.2f}{on[key]:10.2f}{ratio:8.2f}x")
    idle = result["scrape_cpu_ms_per_s"]
    print(f"  the metered server's CPU while the other runs: {idle:.1f} ms/s")
    pairs = zip(result["runs"]["off"], result["runs"]["on"], strict=True)
    print("  rounds (off/on req/s): " + ", ".join(
        f"{off['rps']:.0f}/{on['rps']:.0f}" for off, on in pairs))  # fmt: skip
    checks = [
        (f"requests/s with metrics >= {TARGET}x without", result["rps_ratio"] >= TARGET),
        ("no failed requests", on["failed"] + off["failed"] == 0),
    ]
    for name, met in checks:
        print(f"  [{'met' if met else 'NOT MET'}] {name}")
    return [met for _, met in checks]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    database = Database(args.admin_url).create()
    servers: list[Gunicorn] = []
    met: list[bool] = []
    try:
        env = {"DATABASE_URL": database.sqlalchemy_url, "INCIDENT_RPC_ENV": "production",
               "SECRET_KEY": "bench-secret-key-0123456789-abcdefghij", "ADMIN_USERNAME": ADMIN[0],
               "ADMIN_PASSWORD": ADMIN[1], "INSTANCE_PATH": instance_dir(),
               "LOG_LEVEL": "WARNING"}  # fmt: skip
        on = Gunicorn("wsgi:app", {**env, "METRICS_ENABLED": "1"}, "/readyz").start()
        servers.append(on)
        off = Gunicorn("wsgi:app", {**env, "METRICS_ENABLED": "0"}, "/readyz").start()
        servers.append(off)
        token = on.post("/rpc", {"action": "authorization", "username": ADMIN[0],
                                 "password": ADMIN[1]})["data"]["token"]  # fmt: skip
        body = {"action": "create", "token": token, "description": "Scooter 875643 offline",
                "source": "monitoring"}  # fmt: skip
        for server in (off, on):
            wrk(server.url + "/rpc", body, args.connections, 2)  # warm-up: pools, caches
        for interval in (float(every) for every in args.scrape_every.split(",")):
            stop = threading.Event()
            scraper = threading.Thread(target=scrape, args=(on.url, interval, stop))
            if interval > 0:
                scraper.start()
            try:
                result = in_turns(args, on, off, body)
            finally:
                stop.set()
                if interval > 0:
                    scraper.join()
            every = f"a scrape every {interval:g} s" if interval > 0 else "no scrapes"
            met += show(f"create, {args.connections} connections, metrics off vs on, {every}",
                        result)  # fmt: skip
        return 0 if all(met) else 1
    finally:
        for server in servers:
            server.stop()
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
