"""This tree against another commit's code on the hot paths: requests/s and worker CPU.

Two production gunicorns, each on a throwaway PostgreSQL database of its own (the
other commit's migrations need not know ours), driven by `wrk` in turns
(`lifecycle.compare`: medians of paired rounds, the workers' CPU per request beside
requests/s). Ratios are this tree's over the other's:

- trigger   PagerDuty triggers as a monitoring storm sends them (bench/storm.lua),
            with a monitor key, at 16 connections
- create    `create` through /rpc with a user's token, at 16 connections
- get_all   `get_all` (status `processing`, limit 50) with a user's token, at 4 and
            16 connections, on `--seed` incidents seeded into each database

    python bench/against.py REF [--only trigger,create,get_all] [--rounds 7] [--seed 200000]
"""

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lifecycle  # noqa: E402
from availability import checkout  # noqa: E402
from harness import DEFAULT_ADMIN_URL, Database, seed_incidents  # noqa: E402
from run import SEED  # noqa: E402

GET_ALL = {"action": "get_all", "status": "processing", "limit": 50}
STORM = ("storm.lua", "5")  # every 5th trigger repeats one of the 20 newest dedup_keys


def cases(only: set[str]) -> list[tuple[str, int]]:
    wanted = [("trigger", 16), ("create", 16), ("get_all", 4), ("get_all", 16)]
    return [(name, connections) for name, connections in wanted if name in only]


def target(server: Any, token: str, key: str, name: str) -> lifecycle.Target:
    if name == "trigger":
        return server, "/v2/enqueue", {**lifecycle.TRIGGER, "routing_key": key}, STORM
    body = lifecycle.CREATE if name == "create" else GET_ALL
    return server, "/rpc", {**body, "token": token}, lifecycle.POSTED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref", help="the other code: a git ref")
    parser.add_argument("--only", default="trigger,create,get_all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=200_000, help="incidents, for get_all")
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                              DEFAULT_ADMIN_URL))  # fmt: skip
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",")}
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
    databases = [Database(args.admin_url).create() for _ in range(2)]
    servers = []
    try:
        servers = [lifecycle.start(databases[0]), lifecycle.start(databases[1], checkout(args.ref))]
        tokens = [lifecycle.sign_in(server) for server in servers]
        keys = [
            lifecycle.monitor_key(server, token)
            for server, token in zip(servers, tokens, strict=True)
        ]
        if "get_all" in only:
            for database in databases:
                seed_incidents(database, SEED, {"rows": args.seed})
        report: dict[str, Any] = {"against": args.ref}
        for name, connections in cases(only):
            ours, theirs = (target(*side, name) for side in zip(servers, tokens, keys, strict=True))
            result = lifecycle.compare(args, ours, theirs, connections)
            del result["runs"]
            report[f"{name}, {connections} connections"] = result
            lifecycle.show(f"{name}, {connections} connections: this tree (ours) / {args.ref}",
                           {**result, "checks": []})  # fmt: skip
    finally:
        for server in servers:
            server.stop()
        for database in databases:
            database.drop()
    print(json.dumps(report))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
