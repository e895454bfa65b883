#!/usr/bin/env python3
"""A small client for incident_rpc: a library and a command line.

It imports nothing from the service, only `requests` (and `websocket-client` for
`watch`): it is what any user would write.

    python client.py login admin            # asks for the password, keeps the token
    python client.py create "Scooter 875643 offline" --source monitoring --severity high
    python client.py list --status new
    python client.py get 7
    python client.py update 7 --status processing
    python client.py resolve 7 --resolution "rebooted"
    python client.py demo                   # create -> update -> list, like the old demo
    python client.py watch --since 0        # print change events as they arrive

The server is INCIDENT_RPC_URL (default http://127.0.0.1:8000); the token comes from
INCIDENT_RPC_TOKEN or the file written by `login` (~/.config/incident_rpc/token).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
TOKEN_FILE = (
    Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "incident_rpc" / "token"
)


class ApiError(Exception):
    """The service answered with a failure envelope."""

    def __init__(self, status: int, error: str, data: dict[str, Any]) -> None:
        super().__init__(f"{status}: {error}")
        self.status, self.error, self.data = status, error, data


class ServiceUnreachable(Exception):
    """No answer from the service at all."""


class Client:
    """Calls actions on POST /rpc and returns their `data`, or raises ApiError."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 10):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.http = requests.Session()

    def call(self, action: str, **params: Any) -> Any:
        body = {"action": action, **params}
        if self.token:
            body["token"] = self.token
        try:
            response = self.http.post(f"{self.url}/rpc", json=body, timeout=self.timeout)
        except requests.RequestException as error:
            raise ServiceUnreachable(
                f"cannot reach {self.url}: {error.__class__.__name__}"
            ) from error
        try:
            envelope = response.json()
        except ValueError as error:
            raise ApiError(response.status_code, "the answer was not JSON", {}) from error
        if not envelope.get("success"):
            raise ApiError(
                envelope.get("status", response.status_code),
                envelope.get("error", ""),
                envelope.get("data") or {},
            )
        return envelope["data"]

    def login(self, username: str, password: str) -> str:
        self.token = self.call("authorization", username=username, password=password)["token"]
        return self.token

    def create(self, description: str, **fields: Any) -> dict[str, Any]:
        return self.call("create", description=description, **fields)

    def list(self, **filters: Any) -> dict[str, Any]:
        return self.call("get_all", **filters)

    def get(self, incident_id: int) -> dict[str, Any]:
        return self.call("get", id=incident_id)

    def update(self, incident_id: int, **fields: Any) -> dict[str, Any]:
        return self.call("update", id=incident_id, **fields)

    def resolve(self, incident_id: int, resolution: str | None = None) -> dict[str, Any]:
        params = {"resolution": resolution} if resolution else {}
        return self.call("resolve", id=incident_id, **params)


def _show(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _row(incident: dict[str, Any]) -> str:
    title = incident.get("title") or incident["description"]
    return f"#{incident['id']:<6} {incident['status']:<10} {incident['severity']:<8} {title[:60]}"


def _fields(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def run_demo(client: Client) -> None:
    created = client.create("Scooter 875643 is offline", title="Scooter offline", source="operator")
    print("created   ", _row(created))
    updated = client.update(created["id"], status="processing")
    print("updated   ", _row(updated))
    for incident in client.list(status="processing", limit=5)["incidents"]:
        print("processing", _row(incident))
    resolved = client.resolve(created["id"], "back online after a reboot")
    print("resolved  ", _row(resolved))


RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)  # seconds, after drops in a row; the last repeats
SILENCE = 60  # seconds without even a ping (the server pings every 25): the link is dead


def websocket_url(url: str, since: int | None) -> str:
    """http://host:8000 -> ws://host:8000/ws?since=N (https -> wss)."""
    base = "ws" + url[len("http") :] if url.startswith("http") else url
    return f"{base}/ws" + (f"?since={since}" if since is not None else "")


def _event_line(event: dict[str, Any]) -> str:
    incident = event.get("data") or {}
    title = incident.get("title") or incident.get("description") or ""
    return (
        f"{event.get('at')}  event #{event['id']:<6} {event.get('type', ''):<9} "
        f"incident #{incident.get('id')} [{incident.get('status')}] {title[:50]}  "
        f"by {event.get('actor')}"
    )


def _follow(ws: Any, as_json: bool, since: int | None) -> tuple[int | None, int | None, str]:
    """Print events until the socket ends: (last id seen, close code or None, reason)."""
    import websocket

    while True:
        frame = ws.recv_frame()  # raw frames: a close is read even if the peer is gone
        if frame.opcode == websocket.ABNF.OPCODE_PING:
            ws.pong(frame.data)
        elif frame.opcode == websocket.ABNF.OPCODE_TEXT:
            event = json.loads(frame.data)
            print(json.dumps(event) if as_json else _event_line(event), flush=True)
            since = event["id"]
        elif frame.opcode == websocket.ABNF.OPCODE_CLOSE:
            code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
            return since, code, frame.data[2:].decode("utf-8", "replace")


def watch(url: str, token: str | None, since: int | None = None, as_json: bool = False) -> None:
    """Print change events as they arrive; after a drop, reconnect with since=<last id seen>,
    so that nothing is missed and nothing shown twice. Stops on Ctrl-C or a refused token."""
    import websocket  # websocket-client: only this command needs it

    drops = 0
    try:
        while True:
            seen = since
            try:
                ws = websocket.create_connection(websocket_url(url, since), timeout=SILENCE)
                try:
                    ws.send(json.dumps({"token": token}))  # not in the URL, which logs keep
                    since, code, reason = _follow(ws, as_json, since)
                finally:
                    ws.shutdown()
            except (OSError, websocket.WebSocketException) as error:
                code, reason = None, f"{type(error).__name__}: {error}".rstrip(": ")
            if code == 1008:  # policy violation: the token is missing, bad or expired
                raise ApiError(401, reason, {})
            drops = 0 if since != seen else drops + 1
            delay = RECONNECT_DELAYS[min(drops, len(RECONNECT_DELAYS) - 1)]
            where = f"since={since}" if since is not None else "live events"
            print(f"-- {reason or 'disconnected'}; reconnecting ({where}) in {delay} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(delay)
    except KeyboardInterrupt:
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("INCIDENT_RPC_URL", DEFAULT_URL))
    parser.add_argument("--json", action="store_true", help="print whole JSON answers")
    commands = parser.add_subparsers(dest="command", required=True)
    login = commands.add_parser("login", help="sign in and keep the token")
    login.add_argument("username")
    login.add_argument("--password", help="asked for when not given")
    create = commands.add_parser("create", help="report an incident")
    create.add_argument("description")
    for name in ("title", "severity", "source"):
        create.add_argument(f"--{name}")
    listing = commands.add_parser("list", help="list incidents, newest first")
    for name in ("status", "source", "severity", "cursor"):
        listing.add_argument(f"--{name}")
    listing.add_argument("--limit", type=int)
    get = commands.add_parser("get", help="show one incident")
    get.add_argument("id", type=int)
    update = commands.add_parser("update", help="change an incident")
    update.add_argument("id", type=int)
    for name in ("status", "title", "description", "severity", "source"):
        update.add_argument(f"--{name}")
    update.add_argument("--version", type=int, help="only if still at this version")
    resolve = commands.add_parser("resolve", help="mark an incident completed")
    resolve.add_argument("id", type=int)
    resolve.add_argument("--resolution")
    commands.add_parser("demo", help="create -> update -> list -> resolve")
    watching = commands.add_parser("watch", help="print change events as they arrive")
    watching.add_argument("--since", type=int, help="first replay the events after this id")
    return parser


def saved_token() -> str | None:
    if os.environ.get("INCIDENT_RPC_TOKEN"):
        return os.environ["INCIDENT_RPC_TOKEN"]
    return TOKEN_FILE.read_text().strip() if TOKEN_FILE.exists() else None


def dispatch(args: argparse.Namespace, client: Client) -> Any:
    if args.command == "login":
        password = args.password or getpass.getpass(f"password for {args.username}: ")
        client.login(args.username, password)
        TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
        TOKEN_FILE.touch(mode=0o600)
        TOKEN_FILE.write_text(client.token or "")
        return f"signed in as {args.username}; token kept in {TOKEN_FILE}"
    if args.command == "create":
        return client.create(args.description, **_fields(args, ("title", "severity", "source")))
    if args.command == "list":
        return client.list(**_fields(args, ("status", "source", "severity", "cursor", "limit")))
    if args.command == "get":
        return client.get(args.id)
    if args.command == "update":
        names = ("status", "title", "description", "severity", "source", "version")
        return client.update(args.id, **_fields(args, names))
    if args.command == "resolve":
        return client.resolve(args.id, args.resolution)
    if args.command == "watch":
        return watch(client.url, client.token, args.since, args.json)
    return run_demo(client)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = Client(args.url, None if args.command == "login" else saved_token())
    try:
        result = dispatch(args, client)
    except ServiceUnreachable as error:
        print(f"error: {error}; is the service running? (make run)", file=sys.stderr)
        return 2
    except ApiError as error:
        hint = " (sign in with: client.py login USERNAME)" if error.status == 401 else ""
        print(f"error {error.status}: {error.error}{hint}", file=sys.stderr)
        for field, messages in (error.data.get("errors") or {}).items():
            print(f"  {field}: {'; '.join(map(str, messages))}", file=sys.stderr)
        return 1
    if isinstance(result, str):
        print(result)
    elif isinstance(result, dict) and "incidents" in result and not args.json:
        for incident in result["incidents"]:
            print(_row(incident))
        if result.get("next_cursor"):
            print(f"more: --cursor {result['next_cursor']}")
    elif result is not None:
        _show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
