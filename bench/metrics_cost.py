"""What /metrics costs: `create` at 16 connections with METRICS_ENABLED on and off.

Two servers of this tree side by side on one throwaway PostgreSQL database, the same
production gunicorn config, differing only in METRICS_ENABLED; wrk drives them in
turns (run.py's `compare`), so that the machine's drift hits both alike, while a
scraper reads /metrics of the metered one once a second (`--scrape-every`; Prometheus's
default is every 15 s).
Target: requests/s with metrics at least 0.95x of without.

    python bench/metrics_cost.py [--rounds 5] [--seconds 3] [--connections 16]
"""

import argparse
import sys
import threading
import urllib.request

from harness import ADMIN, DEFAULT_ADMIN_URL, Database, Gunicorn, instance_dir
from run import _print_comparison, compare

TARGET = 0.95


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--scrape-every", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    return parser.parse_args(argv)


def scrape(url: str, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            response.read()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    database = Database(args.admin_url).create()
    servers: list[Gunicorn] = []
    stop = threading.Event()
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
        scraper = threading.Thread(target=scrape, args=(on.url, args.scrape_every, stop))
        scraper.start()
        # compare()'s "baseline" is the server without metrics, "ours" the one with.
        result = compare(args, (on, "/rpc", body), (off, "/rpc", body), args.connections)
        result["checks"] = [
            (f"requests/s with metrics >= {TARGET}x without", result["rps_ratio"] >= TARGET),
            ("no failed requests", result["ours"]["failed"] + result["baseline"]["failed"] == 0),
        ]
        _print_comparison(
            f"create, {args.connections} connections: metrics off (baseline) vs on", result
        )
        pairs = zip(result["runs"]["baseline"], result["runs"]["ours"], strict=True)
        print("  rounds (off, on req/s): " + ", ".join(
            f"{off['rps']:.0f}/{on['rps']:.0f}" for off, on in pairs))  # fmt: skip
        return 0 if all(met for _, met in result["checks"]) else 1
    finally:
        stop.set()
        for server in servers:
            server.stop()
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
