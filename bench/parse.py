"""Parse cost of a typical create body: jsonio.parse against a bare `json.loads`.

jsonio.parse refuses what it cannot keep (lone surrogates, repeated keys, numbers
beyond a double); the reference is what it did before those rules, `json.loads`
of the bytes with `parse_constant`. Medians of 15 rounds, interleaved so that a
busy machine slows both alike. No server, no database.

    python bench/parse.py
"""

import json
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from incident_rpc.runtime import jsonio  # noqa: E402

BODY = json.dumps({
    "action": "create",
    "token": "eyJ1IjoxLCJlIjowfQ.axBAaQ.WTNfNP8JrM1zdlHaglhVnVJcu7xQ2Yt3nE0kZb1Lw9A",
    "title": "db-3 disk almost full",
    "description": "Less than 5% free on /var of db-3; writes will fail within the hour.",
    "severity": "high", "source": "monitoring", "dedup_key": "alertmanager:7a1f3c9e0b2d4e61",
    "details": {"host": "db-3", "usage": [97, 99], "ratio": 0.97,
                "labels": {"alertname": "DiskFull", "instance": "db-3:9100", "zone": "north"}},
}).encode()  # fmt: skip


def _reference(raw: bytes) -> object:
    return json.loads(raw, parse_constant=jsonio._reject_constant)


def main(rounds: int = 15, number: int = 50_000) -> dict[str, float]:
    """Median microseconds per parse, for the reference and for jsonio.parse."""
    assert jsonio.parse(BODY) == _reference(BODY)
    runs: dict[str, list[float]] = {"json.loads": [], "jsonio.parse": []}
    for _ in range(rounds):
        for name, parse in (("json.loads", _reference), ("jsonio.parse", jsonio.parse)):
            seconds = timeit.timeit(lambda parse=parse: parse(BODY), number=number)
            runs[name].append(seconds / number * 1e6)
    return {name: statistics.median(times) for name, times in runs.items()}


if __name__ == "__main__":
    for name, micros in main().items():
        print(f"{name:>12}: {micros:.2f} us per parse of a {len(BODY)}-byte create body")
