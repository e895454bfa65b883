#!/usr/bin/env python3
"""client.py: the operator's terminal tool for incident_rpc, and a small library.

Copy this one file anywhere: it imports nothing from the service, only `requests`
(and `websocket-client` for `watch`).

    python client.py login admin               # asks for the password; a token per server
    python client.py create "Scooter 875643 offline" --source monitoring --severity high
    python client.py list --status new         # --all follows every page
    python client.py get 7
    python client.py update 7 --status processing
    python client.py assign 7 alice            # comment 7 "...", comments 7, history 7
    python client.py acknowledge 7             # or --dedup-key KEY: the open one with it
    python client.py resolve 7 --resolution "rebooted"
    python client.py watch --since 0           # change events as they arrive
    python client.py batch commands.json       # a JSON array of commands; - reads stdin
    python client.py users list                # users create|role|disable|enable|reset-password
    python client.py keys create nagios        # keys list|revoke
    python client.py get 7 --json              # raw data; --json and --url go anywhere

The server is --url or INCIDENT_RPC_URL (default http://127.0.0.1:8000). The token is
INCIDENT_RPC_TOKEN, or else the one `login` saved for that URL in
$XDG_CONFIG_HOME/incident_rpc/tokens.json (default ~/.config/...; mode 0600).
Exit status: 0 done, 1 an error answer (or no service at the URL), 2 wrong usage, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import select
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

DEFAULT_URL = "http://127.0.0.1:8000"
# The contract's values (PROTOCOL.md, section 5), for argparse's choices and --help.
STATUSES = ("new", "processing", "completed", "fake", "unknown")
SEVERITIES = ("low", "medium", "high", "critical")
SOURCES = ("operator", "monitoring", "partner", "unknown")
ROLES = ("reporter", "agent", "admin")
KEY_ROLES = (*ROLES, "monitor")  # monitor: acknowledges and resolves what it raised


# -- Failures ------------------------------------------------------------------------------


class ApiError(Exception):
    """The service answered with a failure envelope."""

    def __init__(self, status: int, error: str, data: dict[str, Any]) -> None:
        super().__init__(f"{status}: {error}")
        self.status, self.error, self.data = status, error, data


class ClientFailure(Exception):
    """Something went wrong before any answer could say so; the message says what."""


class NotTheService(ClientFailure):
    """Nothing at the URL answers as incident_rpc does."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}/ does not look like an incident_rpc server ({reason})")


class UsageError(Exception):
    """A command line that argparse accepted but that cannot work (exit 2, like argparse's)."""


# -- The library ---------------------------------------------------------------------------


def normal_url(url: str) -> str:
    """One spelling per server, the key of its saved token: no trailing slash, and no /rpc
    (the route is ours to add)."""
    return url.strip().rstrip("/").removesuffix("/rpc")


def is_envelope(answer: Any) -> bool:
    return isinstance(answer, dict) and {"success", "error", "status", "data"} <= answer.keys()


def is_jsonrpc(answer: Any) -> bool:
    return isinstance(answer, dict) and "jsonrpc" in answer


def succeeded(answer: Any) -> bool:
    """An element of a batch's answer: an envelope, or a JSON-RPC response."""
    return answer["success"] if is_envelope(answer) else "error" not in answer


def _connection_trouble(error: requests.RequestException) -> str:
    # urllib3 buries the socket's errno deep in its message; its words are all we get.
    text = str(error)
    if "refused" in text.lower():
        return "connection refused"
    if "resolve" in text or "not known" in text:
        return "unknown host"
    return f"cannot connect: {type(error).__name__}"


class Client:
    """Calls actions on POST /rpc: `call` returns an action's `data` or raises ApiError."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30):
        self.url = normal_url(url)
        self.token = token
        self.timeout = timeout
        self.http = requests.Session()

    def post(self, body: Any) -> Any:
        """Post one command or a batch; the answer, once it is sure to be the service's."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = self.http.post(
                f"{self.url}/rpc", json=body, headers=headers, timeout=self.timeout
            )
        except requests.Timeout as error:
            raise NotTheService(self.url, f"no answer in {self.timeout:g} s") from error
        except requests.ConnectionError as error:
            raise NotTheService(self.url, _connection_trouble(error)) from error
        except requests.RequestException as error:  # not even a URL: no scheme, no host
            raise NotTheService(self.url, type(error).__name__) from error
        if response.status_code == 204:  # a batch of JSON-RPC notifications only
            return []
        try:
            answer = response.json()
        except ValueError:
            raise NotTheService(self.url, f"HTTP {response.status_code}, not JSON") from None
        items = answer if isinstance(answer, list) else [answer]
        if not all(is_envelope(item) or is_jsonrpc(item) for item in items):
            raise NotTheService(self.url, f"HTTP {response.status_code}, JSON without the envelope")
        if is_envelope(answer) and (answer["status"], answer["error"]) == (404, "not found"):
            # The service's word for a path it lacks (a missing action or incident is named):
            # the URL points below or beside the service, e.g. .../api.
            raise NotTheService(self.url, f"{self.url}/rpc is not found there")
        return answer

    def call(self, action: str, **params: Any) -> Any:
        answer = self.post({"action": action, **params})
        if not is_envelope(answer):
            raise NotTheService(self.url, "a list answered one command")
        if not answer["success"]:
            raise ApiError(answer["status"], answer["error"], answer["data"] or {})
        return answer["data"]

    def batch(self, commands: list[Any]) -> list[dict[str, Any]]:
        """Every command's answer, in order; ApiError when the batch itself is refused."""
        answer = self.post(commands)
        if isinstance(answer, dict):  # empty, too many commands, too large
            raise ApiError(answer["status"], answer["error"], answer["data"] or {})
        return answer

    def pages(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """get_all's pages, one after another, following next_cursor to the end."""
        while True:
            page = self.call("get_all", **filters)
            yield page
            if not page.get("next_cursor"):
                return
            filters["cursor"] = page["next_cursor"]

    def login(self, username: str, password: str) -> dict[str, Any]:
        signed_in = self.call("authorization", username=username, password=password)
        self.token = signed_in["token"]
        return signed_in

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


class Tokens:
    """Saved tokens, one per server URL, in a JSON file that only its owner may read:
    signing in to a second server leaves the first one's token alone."""

    def __init__(self, path: Path | None = None) -> None:
        config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        self.path = path or Path(config) / "incident_rpc" / "tokens.json"

    def saved(self) -> dict[str, str]:
        try:
            tokens = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):  # none yet, or damaged: sign in afresh
            return {}
        return tokens if isinstance(tokens, dict) else {}

    def get(self, url: str) -> str | None:
        return self.saved().get(normal_url(url))

    def put(self, url: str, token: str | None) -> None:
        """Keep (or, with None, forget) the token of one server."""
        tokens = self.saved()
        if token is None:
            tokens.pop(normal_url(url), None)
        else:
            tokens[normal_url(url)] = token
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = self.path.with_suffix(".tmp")  # written whole, then swapped in
        descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a file left over keeps its mode through O_CREAT
        with os.fdopen(descriptor, "w") as file:
            json.dump(tokens, file, indent=2)
        os.replace(fresh, self.path)


# -- What a person reads -------------------------------------------------------------------


def short(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def incident_row(incident: dict[str, Any]) -> str:
    title = incident.get("title") or incident.get("description") or ""
    return f"#{incident['id']:<6} {incident['status']:<10} {incident['severity']:<8} {title[:60]}"


def incident_lines(incident: dict[str, Any]) -> list[str]:
    """One incident in a few aligned lines, only the fields that say something."""
    title = incident.get("title")
    created = f"{incident.get('created_at')} by {incident.get('created_by')}"
    rows = [
        ("description", incident.get("description") if title else None),
        ("status", incident.get("status")),
        ("severity", incident.get("severity")),
        ("source", incident.get("source")),
        ("assignee", incident.get("assignee") or "nobody"),
        ("created", created),
        ("updated", f"{incident.get('updated_at')} (version {incident.get('version')})"),
    ]
    if incident.get("acknowledged_at"):
        taken = f"{incident['acknowledged_at']} by {incident.get('acknowledged_by')}"
        rows.append(("acknowledged", taken))
    if incident.get("resolved_at"):
        resolution = f": {incident['resolution']}" if incident.get("resolution") else ""
        resolved = f"{incident['resolved_at']} by {incident.get('resolved_by')}{resolution}"
        rows.append(("resolved", resolved))
    if (incident.get("occurrences") or 1) > 1:
        rows.append(("seen", f"{incident['occurrences']} times, last {incident['last_seen_at']}"))
    if incident.get("dedup_key"):
        rows.append(("dedup key", incident["dedup_key"]))
    if incident.get("details"):
        rows.append(("details", json.dumps(incident["details"], ensure_ascii=False)))
    head = f"#{incident['id']}  {title or incident.get('description', '')}"
    return [head, *(f"  {name:<12} {value}" for name, value in rows if value is not None)]


def changes_text(changes: dict[str, Any] | None) -> str:
    """history's {field: [old, new]} (or a comment's {id, text}) as a short phrase."""
    parts = []
    for name, change in (changes or {}).items():
        if isinstance(change, list) and len(change) == 2:
            old, new = (short(value, 30) for value in change)
            parts.append(f"{name} {new}" if change[0] is None else f"{name} {old} -> {new}")
        elif isinstance(change, dict) and "text" in change:
            parts.append(f"{name}: {short(change['text'])}")
        else:
            parts.append(f"{name} {short(change)}")
    return ", ".join(parts)


def user_row(user: dict[str, Any]) -> str:
    state = "disabled" if user.get("disabled") else "active"
    return f"{user['username']:<24} {user['role']:<9} {state:<9} since {user.get('created_at')}"


def silence_row(silence: dict[str, Any]) -> str:
    matchers = ", ".join(f"{name}={value}" for name, value in silence["matchers"].items())
    comment = f" ({silence['comment']})" if silence.get("comment") else ""
    return (
        f"#{silence['id']:<5} {silence['state']:<8} {silence['starts_at']} .. {silence['ends_at']}"
        f"  {matchers}  by {silence.get('created_by')}{comment}"
    )


def channel_row(channel: dict[str, Any]) -> str:
    state = "enabled" if channel["enabled"] else f"disabled ({channel.get('disabled_reason')})"
    where = channel.get("url") or channel.get("chat_id") or ""
    events = ",".join(channel["rule"]["events"])
    return (
        f"#{channel['id']:<5} {channel['name']:<20} {channel['kind']:<8} {state:<9} {where}"
        f"  {events} >= {channel['rule']['min_severity']}  secret {channel['secret_prefix']}"
    )


def delivery_row(delivery: dict[str, Any]) -> str:
    last = delivery.get("last_status") or delivery.get("last_error") or "-"
    due = f", next {delivery['next_attempt_at']}" if delivery.get("next_attempt_at") else ""
    return (
        f"#{delivery['id']:<6} channel #{delivery['channel_id']:<4} {delivery['type']:<14}"
        f" incident {delivery.get('incident_id')}  {delivery['state']:<9}"
        f" {delivery['attempts']} attempts, last {last}{due}"
    )


def key_row(key: dict[str, Any]) -> str:
    used = key.get("last_used_at") or "never"
    revoked = f", revoked {key['revoked_at']}" if key.get("revoked") else ""
    return (
        f"#{key['id']:<5} {key['name']:<24} {key['role']:<9} {key['prefix']}…  "
        f"by {key.get('created_by')}, last used {used}{revoked}"
    )


def error_text(status: int, error: str, data: dict[str, Any]) -> str:
    """`error 400: ...` with each invalid field's messages."""
    fields = (data or {}).get("errors") or {}
    named = "; ".join(  # _schema: a message about the whole command, not one field
        " ".join(map(str, notes)) if name == "_schema" else f"{name}: {' '.join(map(str, notes))}"
        for name, notes in fields.items()
    )
    return f"error {status}: {error}" + (f" ({named})" if named else "")


def answer_line(number: int, answer: Any) -> str:
    """One answer of a batch: the status and what was done, or the error."""
    if not is_envelope(answer):  # a JSON-RPC element's answer
        return f"[{number}] {json.dumps(answer, ensure_ascii=False)}"
    if not answer["success"]:
        return f"[{number}] {error_text(answer['status'], answer['error'], answer['data'])}"
    data = answer["data"]
    looks_like_incident = isinstance(data, dict) and {"id", "status", "severity"} <= data.keys()
    said = incident_row(data) if looks_like_incident else short(data, 100)
    return f"[{number}] {answer['status']} {said}"


def json_lines(data: Any) -> list[str]:
    return [json.dumps(data, indent=2, ensure_ascii=False)]


def event_line(event: dict[str, Any]) -> str:
    incident = event.get("data") or {}
    title = incident.get("title") or incident.get("description") or ""
    return (
        f"{event.get('at')}  event #{event.get('id')!s:<6} {event.get('type', ''):<9} "
        f"incident #{incident.get('id')} [{incident.get('status')}] {title[:50]}  "
        f"by {event.get('actor')}"
    )


# -- Commands ------------------------------------------------------------------------------


@dataclass
class Output:
    """What a command answers: `data` for --json, `lines` for a person."""

    data: Any
    lines: list[str]
    failed: bool = False  # some of it went wrong (a batch): exit 1 after printing it all


Argument = tuple[tuple[str, ...], dict[str, Any]]
Run = Callable[[Client, argparse.Namespace], Output | None]


@dataclass(frozen=True)
class Command:
    name: str  # "get", or "users create": a group's member
    help: str
    run: Run
    arguments: tuple[Argument, ...]
    anonymous: bool  # signs in (or up): sends no token, and a 401 is no cue to sign in


COMMANDS: list[Command] = []  # in the order of --help
GROUPS = {
    "users": "manage users (admin)",
    "keys": "manage API keys for agents (admin)",
    "silences": "maintenance windows: incidents that match are stored, marked, not notified",
    "channels": "where notifications go: webhooks, Slack, Telegram (admin)",
    "deliveries": "each notification sent or to send, and its attempts (admin)",
}


def command(name: str, help: str, *arguments: Argument, anonymous: bool = False):
    def register(run: Run) -> Run:
        COMMANDS.append(Command(name, help, run, arguments, anonymous))
        return run

    return register


def arg(*flags: str, **options: Any) -> Argument:
    return flags, options


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('a JSON object, e.g. \'{"zone": "north"}\'')
    return value


def name_and_text(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def name_value(text: str) -> tuple[str, Any]:
    """NAME=VALUE; the value is JSON when it parses as JSON (7, true, null, [1, 2]), else text."""
    name, value = name_and_text(text)
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def criterion(text: str) -> tuple[str, Any]:
    """A bulk filter's NAME=VALUE, as text (a dedup_key of digits stays text); status, source
    and severity take a,b for several."""
    name, value = name_and_text(text)
    return name, value.split(",") if name in ("status", "source", "severity") else value


def given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The parameters named that the command line gave."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def new_password(who: str) -> str:
    password = getpass.getpass(f"new password for {who}: ")
    if getpass.getpass("the same again: ") != password:
        raise ClientFailure("the two passwords differ; nothing was changed")
    return password


ID = arg("id", type=int, help="incident id")
TITLE = arg("--title", help="a short headline")
SEVERITY = arg("--severity", choices=SEVERITIES)
SOURCE = arg("--source", choices=SOURCES)
STATUS = arg("--status", choices=STATUSES)
DETAILS = arg("--details", type=json_object, help="free-form JSON object")
ASSIGNEE = arg("--assignee", help="an agent's username")
BULK_IDS = arg("ids", nargs="*", type=int, metavar="ID", help="the incidents; or --filter")
BULK_FILTER = arg(
    "--filter", action="append", type=criterion, metavar="NAME=VALUE",
    help="instead of ids; repeatable: status, source, severity (a,b for several), "
    "dedup_key, dedup_key_prefix, created_before, created_after",
)  # fmt: skip
PASSWORD = arg("--password", help="asked for when not given (a command line shows in ps)")
ROLE = arg("--role", choices=ROLES, default="reporter", help="default: reporter")
KEY_ROLE = arg("--role", choices=KEY_ROLES, default="reporter", help="default: reporter")
CHANGES = ("title", "description", "status", "severity", "source", "details", "assignee")


def bulk_target(args: argparse.Namespace) -> dict[str, Any]:
    if bool(args.ids) == bool(args.filter):
        raise UsageError("give incident ids or --filter, one of the two")
    return {"ids": args.ids} if args.ids else {"filter": dict(args.filter)}


def bulk_lines(done: dict[str, Any]) -> list[str]:
    ids = " ".join(f"#{number}" for number in done["ids"])
    skipped = [f"skipped #{item['id']}: {item['reason']}" for item in done["skipped"]]
    return [f"changed {done['changed']}" + (f": {ids}" if ids else ""), *skipped]


# Sessions


@command("login", "sign in; the token is saved for this server", arg("username"), PASSWORD,
         anonymous=True)  # fmt: skip
def login(client: Client, args: argparse.Namespace) -> Output:
    password = args.password or getpass.getpass(f"password for {args.username}: ")
    signed_in = client.login(args.username, password)
    Tokens().put(client.url, signed_in["token"])
    return Output(signed_in, [f"signed in to {client.url} as {args.username}"])


@command("logout", "end every session of yours and forget the saved token")
def logout(client: Client, args: argparse.Namespace) -> Output:
    try:
        client.call("logout")
    except ApiError as error:
        if error.status != 401:  # an expired or revoked token has no session left to end
            raise
    Tokens().put(client.url, None)
    return Output({}, [f"signed out of {client.url}"])


@command("whoami", "who the token is")
def whoami(client: Client, args: argparse.Namespace) -> Output:
    me = client.call("whoami")
    return Output(me, [f"{me['username']} ({me['role']}) at {client.url}"])


@command("passwd", "change your password (asks for both); other sessions end")
def passwd(client: Client, args: argparse.Namespace) -> Output:
    old = getpass.getpass("current password: ")
    signed_in = client.call("password_change", old_password=old, new_password=new_password("you"))
    Tokens().put(client.url, signed_in["token"])  # the answer is the one token still valid
    return Output(signed_in, ["password changed; every other session has ended"])


@command("register", "sign up as a reporter, where the server allows it", arg("username"),
         PASSWORD, anonymous=True)  # fmt: skip
def register(client: Client, args: argparse.Namespace) -> Output:
    user = client.call(
        "register", username=args.username, password=args.password or new_password(args.username)
    )
    signing_in = f"sign in with: client.py login {user['username']}"
    return Output(user, [f"registered {user['username']} ({user['role']}); {signing_in}"])


# Incidents


@command("create", "report an incident", arg("description", help="what is wrong"), TITLE,
         SEVERITY, SOURCE, DETAILS,
         arg("--date", help="when it began, ISO 8601"),
         arg("--dedup-key", help="while open, repeats with this key only count"))  # fmt: skip
def create(client: Client, args: argparse.Namespace) -> Output:
    params = given(args, "title", "severity", "source", "details", "date", "dedup_key")
    incident = client.create(args.description, **params)
    return Output(incident, incident_lines(incident))


@command("list", "list incidents, newest first", STATUS, SOURCE, SEVERITY, ASSIGNEE,
         arg("--created-by", help="username, or key:NAME"),
         arg("--limit", type=int, help="per page (1..1000)"), arg("--cursor"),
         arg("--all", action="store_true", help="follow every page to the end"))  # fmt: skip
def list_incidents(client: Client, args: argparse.Namespace) -> Output | None:
    filters = given(args, "status", "source", "severity", "assignee", "created_by", "limit")
    filters.update(given(args, "cursor"))
    if args.all:
        return list_all(client, filters, args.json)
    page = client.list(**filters)
    lines = [incident_row(incident) for incident in page["incidents"]] or ["no incidents"]
    if page.get("next_cursor") and not args.json:
        lines.append(f"more: --cursor {page['next_cursor']} (or --all)")
    return Output(page, lines)


def list_all(client: Client, filters: dict[str, Any], as_json: bool) -> Output | None:
    """Rows as their pages arrive (all at once for --json), a line of progress on stderr."""
    everything: list[dict[str, Any]] = []
    count = 0
    for number, page in enumerate(client.pages(**filters), 1):
        count += len(page["incidents"])
        if as_json:
            everything += page["incidents"]
        else:
            for incident in page["incidents"]:
                print(incident_row(incident), flush=True)
        more = "" if page.get("next_cursor") is None else ", more to come"
        noun = "incident" if count == 1 else "incidents"
        print(f"-- page {number}: {count} {noun}{more}", file=sys.stderr, flush=True)
    if as_json:
        return Output({"incidents": everything, "next_cursor": None}, [])
    return None if count else Output(None, ["no incidents"])


@command("get", "show one incident", ID)
def get(client: Client, args: argparse.Namespace) -> Output:
    incident = client.get(args.id)
    return Output(incident, incident_lines(incident))


@command("update", "change an incident", ID, STATUS, TITLE, arg("--description"), SEVERITY,
         SOURCE, DETAILS, ASSIGNEE,
         arg("--version", type=int, help="only if still at this version"))  # fmt: skip
def update(client: Client, args: argparse.Namespace) -> Output:
    incident = client.update(args.id, **given(args, *CHANGES, "version"))
    return Output(incident, incident_lines(incident))


@command("resolve", "mark an incident completed", ID, arg("--resolution", help="what fixed it"))
def resolve(client: Client, args: argparse.Namespace) -> Output:
    incident = client.resolve(args.id, args.resolution)
    return Output(incident, incident_lines(incident))


@command("acknowledge", "take an incident on: who and when; new becomes processing",
         arg("id", type=int, nargs="?", help="incident id (or --dedup-key)"),
         arg("--dedup-key", help="instead of an id: the open incident with this key"))  # fmt: skip
def acknowledge(client: Client, args: argparse.Namespace) -> Output:
    if (args.id is None) == (args.dedup_key is None):
        raise UsageError("give an incident id or --dedup-key, one of the two")
    target = {"id": args.id} if args.id is not None else {"dedup_key": args.dedup_key}
    incident = client.call("acknowledge", **target)
    return Output(incident, incident_lines(incident))


@command("assign", "give an incident to an agent", ID,
         arg("assignee", help="an agent's username, or - for nobody"))  # fmt: skip
def assign(client: Client, args: argparse.Namespace) -> Output:
    assignee = None if args.assignee == "-" else args.assignee
    incident = client.call("assign", id=args.id, assignee=assignee)
    return Output(incident, incident_lines(incident))


@command("comment", "add a comment to an incident", ID, arg("text"))
def comment(client: Client, args: argparse.Namespace) -> Output:
    note = client.call("comment", id=args.id, text=args.text)
    return Output(note, [f"comment #{note['id']} on incident #{note['incident_id']}"])


@command("comments", "an incident's comments, oldest first", ID)
def comments(client: Client, args: argparse.Namespace) -> Output:
    notes = client.call("comments", id=args.id)
    lines = [f"{c['created_at']}  {c['author']}: {c['text']}" for c in notes["comments"]]
    return Output(notes, lines or ["no comments"])


@command("history", "every change of an incident: who, when, what", ID)
def history(client: Client, args: argparse.Namespace) -> Output:
    return trail_output(client.call("history", id=args.id))


def trail_output(trail: dict[str, Any]) -> Output:
    lines = [
        f"{event['at']}  {event['type']:<9} by {event['actor']}  {changes_text(event['changes'])}"
        for event in trail["events"]
    ]
    return Output(trail, lines)


@command("resolve-many", "resolve every listed or matching incident", BULK_IDS, BULK_FILTER,
         arg("--resolution"))  # fmt: skip
def resolve_many(client: Client, args: argparse.Namespace) -> Output:
    done = client.call("resolve_many", **bulk_target(args), **given(args, "resolution"))
    return Output(done, bulk_lines(done))


@command("update-many", "change every listed or matching incident", BULK_IDS, BULK_FILTER,
         STATUS, TITLE, arg("--description"), SEVERITY, SOURCE, DETAILS, ASSIGNEE)  # fmt: skip
def update_many(client: Client, args: argparse.Namespace) -> Output:
    done = client.call("update_many", **bulk_target(args), **given(args, *CHANGES))
    return Output(done, bulk_lines(done))


# Users and keys (admins)


@command("users list", "every user and their role")
def users_list(client: Client, args: argparse.Namespace) -> Output:
    users = client.call("user_list")
    return Output(users, [user_row(user) for user in users["users"]])


@command("users create", "add a user", arg("username"), ROLE, PASSWORD)
def users_create(client: Client, args: argparse.Namespace) -> Output:
    password = args.password or new_password(args.username)
    user = client.call("user_create", username=args.username, password=password, role=args.role)
    return Output(user, [user_row(user)])


def user_update(client: Client, username: str, **change: Any) -> Output:
    user = client.call("user_update", username=username, **change)
    return Output(user, [user_row(user)])


@command("users role", "change a user's role", arg("username"), arg("role", choices=ROLES))
def users_role(client: Client, args: argparse.Namespace) -> Output:
    return user_update(client, args.username, role=args.role)


@command("users disable", "stop a user signing in; their sessions end", arg("username"))
def users_disable(client: Client, args: argparse.Namespace) -> Output:
    return user_update(client, args.username, disabled=True)


@command("users enable", "let a disabled user sign in again", arg("username"))
def users_enable(client: Client, args: argparse.Namespace) -> Output:
    return user_update(client, args.username, disabled=False)


@command("users reset-password", "set a user's password; their sessions end", arg("username"),
         PASSWORD)  # fmt: skip
def users_reset_password(client: Client, args: argparse.Namespace) -> Output:
    return user_update(client, args.username, password=args.password or new_password(args.username))


@command("keys list", "every API key (never the key itself)")
def keys_list(client: Client, args: argparse.Namespace) -> Output:
    keys = client.call("key_list")
    return Output(keys, [key_row(key) for key in keys["keys"]] or ["no keys"])


@command("keys create", "a key for a monitoring agent; shown this once", arg("name"), KEY_ROLE)
def keys_create(client: Client, args: argparse.Namespace) -> Output:
    made = client.call("key_create", name=args.name, role=args.role)
    return Output(made, [
        f"key #{made['id']} {made['name']} ({made['role']}): {made['key']}",
        "it is shown this once: give it to the agent now (sent like a token)",
    ])  # fmt: skip


@command("keys revoke", "stop a key working, at once", arg("id", type=int, help="key id"))
def keys_revoke(client: Client, args: argparse.Namespace) -> Output:
    key = client.call("key_revoke", id=args.id)
    return Output(key, [key_row(key)])


# Maintenance windows (agents and admins)


@command("silences list", "maintenance windows, newest first",
         arg("--state", choices=("active", "pending", "expired")))  # fmt: skip
def silences_list(client: Client, args: argparse.Namespace) -> Output:
    silences = client.call("silence_list", **given(args, "state"))
    return Output(silences, [silence_row(s) for s in silences["silences"]] or ["no silences"])


@command("silences create", "silence what matches, from now (or --starts-at) for a while",
         arg("--source"), arg("--severity", help="at most this severity"),
         arg("--dedup-key", dest="dedup_key", help="a prefix, or a glob such as db-*/disk"),
         arg("--text", help="contained in the title or description"),
         arg("--label", dest="labels", action="append", type=name_and_text, default=[],
             metavar="NAME=VALUE", help="a label of the incident's details (repeatable)"),
         arg("--duration", type=int, help="seconds"), arg("--ends-at", dest="ends_at"),
         arg("--starts-at", dest="starts_at"), arg("--comment"))  # fmt: skip
def silences_create(client: Client, args: argparse.Namespace) -> Output:
    matchers = given(args, "source", "severity", "dedup_key", "text")
    if args.labels:
        matchers["labels"] = dict(args.labels)
    times = given(args, "duration", "ends_at", "starts_at", "comment")
    silence = client.call("silence_create", matchers=matchers, **times)
    return Output(silence, [silence_row(silence)])


@command("silences expire", "end a silence now", arg("id", type=int, help="silence id"))
def silences_expire(client: Client, args: argparse.Namespace) -> Output:
    silence = client.call("silence_expire", id=args.id)
    return Output(silence, [silence_row(silence)])


@command("silences history", "every change of a silence: who, when, what",
         arg("id", type=int, help="silence id"))  # fmt: skip
def silences_history(client: Client, args: argparse.Namespace) -> Output:
    return trail_output(client.call("silence_history", id=args.id))


# Notifications (admins)

EVENT_TYPES = ("added", "acknowledged", "resolved", "updated", "commented")
CHANNEL_RULE = (
    arg(
        "--events", nargs="+", choices=("added", "acknowledged", "resolved", "updated", "commented")
    ),
    arg("--min-severity", dest="min_severity", choices=("low", "medium", "high", "critical")),
    arg("--sources", nargs="+", choices=("operator", "monitoring", "partner", "unknown")),
    arg("--include-silenced", dest="include_silenced", action="store_true", default=None),
    arg("--renotify-every", dest="renotify_every", type=int, help="minutes"),
)
RULE_KEYS = ("events", "min_severity", "sources", "include_silenced", "renotify_every")


def url_of(args: argparse.Namespace) -> dict[str, str]:
    """--hook-url as the channel's `url` (--url is the server's)."""
    return {"url": args.hook_url} if args.hook_url else {}


@command("channels list", "every notification channel (secrets masked)")
def channels_list(client: Client, args: argparse.Namespace) -> Output:
    channels = client.call("channel_list")
    return Output(channels, [channel_row(c) for c in channels["channels"]] or ["no channels"])


@command("channels create", "a webhook, Slack or Telegram channel; a webhook's secret shows once",
         arg("name"), arg("kind", choices=("webhook", "slack", "telegram")),
         arg("--hook-url", dest="hook_url", help="the webhook's or Slack's URL"),
         arg("--bot-token", dest="bot_token"), arg("--chat-id", dest="chat_id"),
         *CHANNEL_RULE)  # fmt: skip
def channels_create(client: Client, args: argparse.Namespace) -> Output:
    given_ = given(args, "bot_token", "chat_id", *RULE_KEYS) | url_of(args)
    made = client.call("channel_create", name=args.name, kind=args.kind, **given_)
    lines = [channel_row(made)]
    if made.get("secret"):
        lines.append(f"signing secret: {made['secret']} (shown this once: give it to the receiver)")
    return Output(made, lines)


@command("channels update", "change a channel's address or rule; --enable after a 410",
         arg("id", type=int, help="channel id"), arg("--name"),
         arg("--hook-url", dest="hook_url", help="a new webhook or Slack URL"),
         arg("--enable", dest="enabled", action="store_const", const=True),
         arg("--disable", dest="enabled", action="store_const", const=False),
         *CHANNEL_RULE)  # fmt: skip
def channels_update(client: Client, args: argparse.Namespace) -> Output:
    change = given(args, "name", "enabled", *RULE_KEYS) | url_of(args)
    channel = client.call("channel_update", id=args.id, **change)
    return Output(channel, [channel_row(channel)])


@command("channels delete", "remove a channel and its deliveries", arg("id", type=int))
def channels_delete(client: Client, args: argparse.Namespace) -> Output:
    done = client.call("channel_delete", id=args.id)
    return Output(done, [f"channel #{done['id']} deleted"])


@command("channels test", "send a test notification now", arg("id", type=int))
def channels_test(client: Client, args: argparse.Namespace) -> Output:
    delivery = client.call("channel_test", id=args.id)
    return Output(delivery, [delivery_row(delivery)])


@command("deliveries list", "notifications, newest first",
         arg("--channel", dest="channel_id", type=int),
         arg("--incident", dest="incident_id", type=int),
         arg("--state", choices=("pending", "delivered", "failed")),
         arg("--limit", type=int))  # fmt: skip
def deliveries_list(client: Client, args: argparse.Namespace) -> Output:
    found = client.call(
        "delivery_list", **given(args, "channel_id", "incident_id", "state", "limit")
    )
    return Output(found, [delivery_row(d) for d in found["deliveries"]] or ["no deliveries"])


@command("deliveries retry", "send a failed notification again", arg("id", type=int))
def deliveries_retry(client: Client, args: argparse.Namespace) -> Output:
    delivery = client.call("delivery_retry", id=args.id)
    return Output(delivery, [delivery_row(delivery)])


# Everything else


@command("batch", "post a JSON array of commands as one batch; print each answer",
         arg("file", type=argparse.FileType(), metavar="FILE|-", help="- reads stdin"))  # fmt: skip
def batch(client: Client, args: argparse.Namespace) -> Output:
    with args.file as file:
        try:
            commands = json.load(file)
        except ValueError as error:
            raise UsageError(f"{file.name} is not JSON: {error}") from None
    if isinstance(commands, dict):  # one command is a batch of one
        commands = [commands]
    if not isinstance(commands, list):
        raise UsageError(f"{file.name} holds no JSON array of commands")
    answers = client.batch(commands)
    lines = [answer_line(number, answer) for number, answer in enumerate(answers, 1)]
    failed = not all(map(succeeded, answers))
    return Output(answers, lines or ["no answers (notifications only)"], failed)


@command("watch", "print change events as they arrive",
         arg("--since", type=int, help="first replay every event after this id"),
         arg("--retries", type=int, default=10, help="failed reconnects in a row before giving up"),
         arg("--forever", action="store_true", help="never give up reconnecting"))  # fmt: skip
def watch(client: Client, args: argparse.Namespace) -> None:
    retries = None if args.forever else args.retries
    Watch(client.url, client.token, args.since, args.json, retries).run()


@command("describe", "the server's actions")
def describe(client: Client, args: argparse.Namespace) -> Output:
    document = client.call("describe")
    lines = [f"{method['name']:<16} {method.get('x-role') or 'anyone':<9} {method['summary']}"
             for method in document["methods"]]  # fmt: skip
    return Output(document, lines)


@command("stats", "counts, open incidents by age, MTTA and MTTR for a window",
         arg("--since", help="start, ISO 8601 (default: 30 days before --until)"),
         arg("--until", help="end, ISO 8601 (default: now)"),
         arg("--group-by", choices=["severity", "source", "assignee", "status"]),
         arg("--days", action="store_true", help="each day's figures too"))  # fmt: skip
def stats(client: Client, args: argparse.Namespace) -> Output:
    data = client.call("stats", **given(args, "since", "until", "group_by"))
    return Output(data, stats_lines(data, args.days))


def duration(seconds: float | None) -> str:
    """A measure in a person's units: 45s, 12m 03s, 3h 05m, 2d 04h."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    for size, unit, next_size, next_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m"),
                                              (60, "m", 1, "s")):  # fmt: skip
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // next_size:02d}{next_unit}"
    return f"{whole}s"


def counts_text(counts: dict[str, int]) -> str:
    return "  ".join(f"{name} {count:,}" for name, count in counts.items()) or "-"


def measure_row(label: str, measure: dict[str, Any]) -> str:
    cells = [duration(measure[name]) for name in ("mean", "p50", "p90", "p99")]
    return f"{label:<14}{measure['count']:>8,}" + "".join(f"{cell:>10}" for cell in cells)


def stats_lines(data: dict[str, Any], days: bool) -> list[str]:
    opened, ages = data["open"], data["open_by_age"]
    lines = [
        f"from {data['since']} to {data['until']}",
        f"incidents      {data['total']:,} ({data['fake']:,} fake, counted apart below)",
        f"by status      {counts_text(data['by_status'])}",
        f"by severity    {counts_text(data['by_severity'])}",
        f"by source      {counts_text(data['by_source'])}",
        f"open now       {opened['total']:,} ({opened['unacknowledged']:,} unacknowledged):"
        f" under 1 h {ages['under_1h']:,}, 1-24 h {ages['1h_24h']:,},"
        f" 1-7 d {ages['1d_7d']:,}, older {ages['older']:,}",
        f"open by sev.   {counts_text(opened['by_severity'])}",
        "",
        f"{'':<14}{'count':>8}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}",
        measure_row("MTTA", data["mtta"]),
        measure_row("MTTR", data["mttr"]),
    ]
    for group in data["groups"]:
        key = "(none)" if group["key"] is None else str(group["key"])
        lines += ["", f"{data['group_by']} {key}: {group['count']:,} incidents"]
        lines += [measure_row("  MTTA", group["mtta"]), measure_row("  MTTR", group["mttr"])]
    if days:
        lines += ["", f"{'day':<14}{'created':>8}{'resolved':>10}"]
        lines += [f"{d['day']:<14}{d['created']:>8,}{d['resolved']:>10,}" for d in data["per_day"]]
    return lines


@command("call", "any action by name, e.g.: call get id=7", arg("action"),
         arg("params", nargs="*", type=name_value, metavar="NAME=VALUE"))  # fmt: skip
def call(client: Client, args: argparse.Namespace) -> Output:
    data = client.call(args.action, **dict(args.params))
    return Output(data, json_lines(data))


@command("demo", "create -> update -> list -> resolve")
def demo(client: Client, args: argparse.Namespace) -> Output:
    created = client.create("Scooter 875643 is offline", title="Scooter offline", source="operator")
    updated = client.update(created["id"], status="processing")
    processing = client.list(status="processing", limit=5)["incidents"]
    resolved = client.resolve(created["id"], "back online after a reboot")
    lines = [f"created    {incident_row(created)}", f"updated    {incident_row(updated)}",
             *(f"processing {incident_row(incident)}" for incident in processing),
             f"resolved   {incident_row(resolved)}"]  # fmt: skip
    steps = {"created": created, "updated": updated, "processing": processing}
    return Output({**steps, "resolved": resolved}, lines)


# -- watch ---------------------------------------------------------------------------------

RECONNECT_DELAYS = (0.5, 1, 2, 5, 10)  # seconds, after failures in a row; the last repeats
SILENCE = 60  # seconds without even a ping (the server pings every 25): the link is dead
GREETING_WAIT = 1.0  # seconds: a server that says where it starts, or refuses, does so at once
POLICY_VIOLATION = 1008  # the token is missing, bad or expired


def websocket_url(url: str, since: int | None) -> str:
    """http://host:8000 -> ws://host:8000/ws?since=N (https -> wss)."""
    base = "ws" + url[len("http") :] if url.startswith("http") else url
    return f"{base}/ws" + (f"?since={since}" if since is not None else "")


class Watch:
    """Print change events; after a drop, reconnect with since=<last id seen>, so that
    nothing is missed and nothing shown twice. Stops on a refused token, or after
    `retries` reconnects in a row that heard nothing from the server (None: never)."""

    def __init__(self, url: str, token: str | None, since: int | None, as_json: bool,
                 retries: int | None) -> None:  # fmt: skip
        self.url, self.token, self.since = url, token, since
        self.as_json, self.retries = as_json, retries
        self.heard = False  # the current socket has received something
        self.announced = False

    def run(self) -> None:
        failures = 0
        while True:
            code, reason = self.attempt()
            if code == POLICY_VIOLATION:
                raise ApiError(401, reason, {})
            failures = 0 if self.heard else failures + 1
            if self.retries is not None and failures > self.retries:
                raise ClientFailure(
                    f"watch gave up after {failures} failed attempts in a row to reach "
                    f"{websocket_url(self.url, None)} ({reason}); --forever keeps trying"
                )
            delay = RECONNECT_DELAYS[min(max(failures - 1, 0), len(RECONNECT_DELAYS) - 1)]
            where = f"since={self.since}" if self.since is not None else "live events"
            print(f"-- {reason or 'disconnected'}; reconnecting ({where}) in {delay} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(delay)

    def attempt(self) -> tuple[int | None, str]:
        """One connection, until it ends: (its close code or None, why it ended)."""
        import websocket  # websocket-client: only this command needs it

        self.heard = self.announced = False
        try:
            ws = websocket.create_connection(websocket_url(self.url, self.since), timeout=SILENCE)
        except (OSError, websocket.WebSocketException) as error:
            return None, f"{type(error).__name__}: {error}".rstrip(": ")
        try:
            ws.send(json.dumps({"token": self.token}))  # not in the URL, which logs keep
            return self.follow(ws)
        except (OSError, websocket.WebSocketException) as error:
            return None, f"{type(error).__name__}: {error}".rstrip(": ")
        finally:
            ws.shutdown()

    def follow(self, ws: Any) -> tuple[int | None, str]:
        import websocket

        if not greeted_soon(ws):  # quiet: the token passed, and nothing happens yet
            self.announce(self.since)
        while True:
            frame = ws.recv_frame()  # raw frames: a close is read even if the peer is gone
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None
                return code, frame.data[2:].decode("utf-8", "replace")
            self.heard = True
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                ws.pong(frame.data)
                self.announce(self.since)
            elif frame.opcode == websocket.ABNF.OPCODE_TEXT:
                self.show(json.loads(frame.data))

    def show(self, message: dict[str, Any]) -> None:
        if message.get("type") == "subscribed":  # the server may say where it starts
            if self.since is None:
                self.since = message.get("position")
            self.announce(message.get("position"))
            return
        self.announce(self.since if self.since is not None else message.get("id"))
        print(json.dumps(message) if self.as_json else event_line(message), flush=True)
        self.since = message.get("id", self.since)

    def announce(self, position: int | None) -> None:
        if not self.announced:
            where = f"live from event {position}" if position is not None else "live events only"
            print(f"connected, {where}", file=sys.stderr, flush=True)
            self.announced = True


def greeted_soon(ws: Any) -> bool:
    """Whether the server sends something (a greeting, an event, a refusal) at once."""
    sock = ws.sock
    if hasattr(sock, "pending") and sock.pending():  # TLS bytes already decrypted
        return True
    return bool(select.select([sock], [], [], GREETING_WAIT)[0])


# -- The command line ----------------------------------------------------------------------


def common_options(top: bool) -> argparse.ArgumentParser:
    """--url and --json, before or after the command: the top parser holds the defaults;
    a command's parser SUPPRESSes its own, so as not to undo what came before it."""
    options = argparse.ArgumentParser(add_help=False)
    url = os.environ.get("INCIDENT_RPC_URL", DEFAULT_URL)
    options.add_argument("--url", default=url if top else argparse.SUPPRESS,
                         help=f"the server (INCIDENT_RPC_URL; now {url})")  # fmt: skip
    options.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                         help="print the raw data as JSON")  # fmt: skip
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], parents=[common_options(True)]
    )
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}
    for spec in COMMANDS:
        group, _, name = spec.name.rpartition(" ")
        if group and group not in groups:
            holder = commands.add_parser(group, help=GROUPS[group], parents=[common_options(False)])
            groups[group] = holder.add_subparsers(dest=f"{group}_command", required=True,
                                                  metavar="COMMAND")  # fmt: skip
        where = groups[group] if group else commands
        parser_of = where.add_parser(
            name, help=spec.help, description=spec.help, parents=[common_options(False)]
        )
        for flags, options in spec.arguments:
            parser_of.add_argument(*flags, **options)
        parser_of.set_defaults(command=spec, parser=parser_of)
    return parser


def emit(output: Output, as_json: bool) -> None:
    if as_json:
        print(json.dumps(output.data, indent=2, ensure_ascii=False))
    elif output.lines:
        print("\n".join(output.lines))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec: Command = args.command
    client = Client(args.url)
    try:
        if not spec.anonymous:
            client.token = os.environ.get("INCIDENT_RPC_TOKEN") or Tokens().get(client.url)
        output = spec.run(client, args)
        if output is not None:
            emit(output, args.json)
        return 1 if output is not None and output.failed else 0
    except KeyboardInterrupt:
        print(file=sys.stderr)  # end the line that ^C (or a prompt) left open
        return 130
    except UsageError as error:  # worded as argparse words its own
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (head, less) has had enough: no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 141  # as a shell reports a writer ended by SIGPIPE
    except ClientFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ApiError as error:
        message = error_text(error.status, error.error, error.data)
        if error.status == 401 and not spec.anonymous:  # signing in is what just failed
            where = "" if client.url == DEFAULT_URL else f" --url {client.url}"
            message += f" (sign in with: client.py{where} login USERNAME)"
        print(message, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
