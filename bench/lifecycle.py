"""Issue 12's benchmarks: the PagerDuty intake, and create under maintenance windows.

On throwaway PostgreSQL databases, servers under the production gunicorn config,
driven by `wrk` in turns (run.compare: medians of paired rounds):

Besides requests/s, each run notes the CPU time its server's workers spent per
request (from /proc): on a machine shared with other work, requests/s of two runs
seconds apart can differ by half, whereas CPU per request barely moves.

- pagerduty   POST /v2/enqueue triggers as a monitoring storm sends them (bench/storm.lua:
              each with a dedup_key, most of them new, every 5th a repeat of one of the
              20 newest, still open; --storm 0: no dedup_key, each a new alert with a key
              made by us) against `create` through POST /rpc on the same server, same
              API key, at 16 connections; then against bench/baseline_app.py's bare
              INSERT + commit, as run.py's create is. Target: >= 0.7x requests/s.
- silences    `create` on a server whose database holds 100 active windows that
              match none of the creates, against one with none. Target: >= 0.9x.
              Also with SILENCE_CACHE_SECONDS=0 (the windows read for every
              create), for the cost the per-process cache saves.

    python bench/lifecycle.py [--only pagerduty,silences] [--rounds 5] [--seconds 3]
                              [--storm 5]
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    ADMIN,
    BENCH,
    DEFAULT_ADMIN_URL,
    ROOT,
    Database,
    Gunicorn,
    instance_dir,
    summarise,
    wrk,
)

TICKS = os.sysconf("SC_CLK_TCK")

CREATE = {"action": "create", "description": "Scooter 875643 offline", "source": "monitoring",
          "severity": "high"}  # fmt: skip
TRIGGER = {"event_action": "trigger",
           "payload": {"summary": "Scooter 875643 offline", "source": "scooter-875643",
                       "severity": "error", "component": "battery"}}  # fmt: skip


def cpu_seconds(server: Gunicorn) -> float:
    """User and system CPU time of the server's workers so far."""
    total = 0
    for pid in server.workers():
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / TICKS


# What one side of a comparison posts: its server, path, body and wrk script (with args).
Target = tuple[Gunicorn, str, Any, tuple[str, ...]]
POSTED: tuple[str, ...] = ("post.lua",)  # the same body every time


def measured(target: Target, connections: int, seconds: int) -> dict:
    server, path, body, script = target
    before = cpu_seconds(server)
    run = wrk(server.url + path, body, connections, seconds, *script)
    run["cpu_ms_per_request"] = (cpu_seconds(server) - before) * 1000 / max(run["requests"], 1)
    return run


def compare(
    args: argparse.Namespace, ours: Target, base: Target, connections: int
) -> dict[str, Any]:
    """As run.compare (baseline and ours in turns; medians of each round's ratio), with
    the workers' CPU time per request beside requests/s and latency."""
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "ours": []}
    for target in (base, ours):
        measured(target, connections, 2)  # warm-up
    for _ in range(args.rounds):
        for label, target in (("baseline", base), ("ours", ours)):
            runs[label].append(measured(target, connections, args.seconds))
    result: dict[str, Any] = {"connections": connections, "runs": runs}
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_ms_per_request")
    for label, done in runs.items():
        result[label] = summarise(done, keys)
    pairs = list(zip(runs["baseline"], runs["ours"], strict=True))
    for key, name in (("rps", "rps_ratio"), ("p99_ms", "p99_ratio"),
                      ("cpu_ms_per_request", "cpu_ratio")):  # fmt: skip
        result[name] = statistics.median(ours[key] / base[key] for base, ours in pairs)
    # CPU per request, inverted: the throughput ratio the CPU cost alone predicts
    result["cpu_rps_ratio"] = 1 / result["cpu_ratio"]
    return result


def show(title: str, result: dict[str, Any]) -> None:
    base, ours = result["baseline"], result["ours"]
    print(f"\n{title}\n  {'':12}{'baseline':>10}{'ours':>10}{'ratio':>9}")
    rows = [("req/s", "rps", result["rps_ratio"]), ("p50 ms", "p50_ms", None),
            ("p99 ms", "p99_ms", result["p99_ratio"]),
            ("cpu ms/req", "cpu_ms_per_request", result["cpu_ratio"])]  # fmt: skip
    for name, key, ratio in rows:
        ratio = ours[key] / base[key] if ratio is None else ratio
        print(f"  {name:12}{base[key]:10.2f}{ours[key]:10.2f}{ratio:8.2f}x")
    for check, met in result["checks"]:
        print(f"  [{'met' if met else 'NOT MET'}] {check}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="pagerduty,silences")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--storm",
        type=int,
        default=5,
        help="every Nth trigger repeats a recent dedup_key; 0: none sent",
    )
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                              DEFAULT_ADMIN_URL))  # fmt: skip
    parser.add_argument("--output", default=str(BENCH / "results" / "lifecycle.json"))
    return parser.parse_args()


def start(database: Database, root: Path = ROOT, **env: str) -> Gunicorn:
    """A production server on `database`, of the code in `root` (ours by default)."""
    settings = {
        "DATABASE_URL": database.sqlalchemy_url, "INCIDENT_RPC_ENV": "production",
        "SECRET_KEY": "bench-secret-key-for-the-lifecycle-bench", "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1], "INSTANCE_PATH": instance_dir(), "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "5", **env,
    }  # fmt: skip
    return Gunicorn("wsgi:app", settings, "/readyz", root).start()


def sign_in(server: Gunicorn) -> str:
    answer = server.post("/rpc", {"action": "authorization", "username": ADMIN[0],
                                  "password": ADMIN[1]})  # fmt: skip
    return answer["data"]["token"]


def monitor_key(server: Gunicorn, token: str) -> str:
    made = server.post("/rpc", {"action": "key_create", "token": token, "name": "bench",
                                "role": "monitor"})  # fmt: skip
    return made["data"]["key"]


def add_windows(server: Gunicorn, token: str, count: int) -> None:
    """`count` active windows, of every kind of matcher, none matching CREATE."""
    kinds = [
        lambda n: {"text": f"maintenance of rack {n}"},
        lambda n: {"dedup_key": f"rack-{n}/*"},
        lambda n: {"labels": {"team": f"team-{n}"}},
        lambda n: {"source": "partner", "severity": "low", "dedup_key": f"partner-{n}/"},
    ]
    for n in range(count):
        command = {"action": "silence_create", "token": token, "matchers": kinds[n % 4](n),
                   "duration": 86400, "comment": f"bench window {n}"}  # fmt: skip
        assert server.post("/rpc", command)["status"] == 201


def bench_pagerduty(args: argparse.Namespace, server: Gunicorn, key: str) -> dict[str, Any]:
    storm = ("storm.lua", str(args.storm)) if args.storm else POSTED
    trigger: Target = (server, "/v2/enqueue", {**TRIGGER, "routing_key": key}, storm)
    create = {**CREATE, "token": key}
    result = compare(args, trigger, (server, "/rpc", create, POSTED), args.connections)
    result["checks"] = [("requests/s >= 0.7x create", result["rps_ratio"] >= 0.7),
                        ("no failed requests", result["ours"]["failed"] == 0)]  # fmt: skip
    sent = f"every {args.storm}th dedup_key a repeat" if args.storm else "no dedup_key"
    show(f"PagerDuty trigger, {sent} (ours) vs create through /rpc (baseline), "
         f"{args.connections} connections", result)  # fmt: skip
    bare = Gunicorn("bench.baseline_app:app", server.env, "/healthz").start()  # its own port
    try:
        against_bare = compare(args, trigger, (bare, "/create", create, POSTED), args.connections)
    finally:
        bare.stop()
    against_bare["checks"] = [
        ("requests/s >= 0.7x bare INSERT", against_bare["rps_ratio"] >= 0.7),
        ("no failed requests", against_bare["ours"]["failed"] == 0),
    ]
    show(f"PagerDuty trigger, {sent} (ours) vs bench/baseline_app.py's INSERT + commit (baseline), "
         f"{args.connections} connections", against_bare)  # fmt: skip
    return {"against_create": result, "against_bare_insert": against_bare}


def bench_silences(args: argparse.Namespace, plain: Gunicorn, token: str) -> dict[str, Any]:
    database = Database(args.admin_url).create()
    results: dict[str, Any] = {}
    try:
        for label, cache in (("cached", "1"), ("uncached", "0")):
            windowed = start(database, SILENCE_CACHE_SECONDS=cache)
            try:
                results[label] = _against_none(args, windowed, plain, token, cache)
            finally:
                windowed.stop()
    finally:
        database.drop()
    return results


def _against_none(
    args: argparse.Namespace, windowed: Gunicorn, plain: Gunicorn, token: str, cache: str
) -> dict[str, Any]:
    windowed_token = sign_in(windowed)
    if cache != "0":  # the first server on the database adds them; the next finds them
        add_windows(windowed, windowed_token, 100)
    ours: Target = (windowed, "/rpc", {**CREATE, "token": windowed_token}, POSTED)
    result = compare(args, ours, (plain, "/rpc", {**CREATE, "token": token}, POSTED),
                     args.connections)  # fmt: skip
    target = 0.9 if cache != "0" else 0.0  # uncached: measured, no target
    result["checks"] = [
        (f"requests/s >= {target}x none", result["rps_ratio"] >= target),
        ("no failed requests", result["ours"]["failed"] == 0),
    ]
    title = (f"create with 100 active windows, SILENCE_CACHE_SECONDS={cache} (ours) vs none"
             f" (baseline), {args.connections} connections")  # fmt: skip
    show(title, result)
    return result


def main() -> dict[str, Any]:
    args = parse_args()
    only = {name.strip() for name in args.only.split(",")}
    report: dict[str, Any] = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
                              "storm": args.storm}  # fmt: skip
    database = Database(args.admin_url).create()
    try:
        server = start(database)
        try:
            token = sign_in(server)
            if "pagerduty" in only:
                key = monitor_key(server, token)
                report["pagerduty"] = bench_pagerduty(args, server, key)
            if "silences" in only:
                report["silences"] = bench_silences(args, server, token)
        finally:
            server.stop()
    finally:
        database.drop()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
