"""client.py end to end: the real command line, each run in its own process.

Against real gunicorn servers on SQLite (client.py has nothing database-specific),
and, where a case needs a server that misbehaves (not the service at all, a page that
never comes, a `subscribed` greeting), small fakes. Every server listens on 127.0.0.1.
Each test has its own HOME and XDG_CONFIG_HOME, so its saved tokens are its own;
prompts and Ctrl-C go through a pseudo-terminal that is the client's controlling
terminal, as a person's would be.
"""

import base64
import hashlib
import json
import os
import pty
import queue
import re
import secrets
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import ADMIN, ROOT, Server, free_port, sqlite_url

CLIENT = ROOT / "client.py"
TIMEOUT = 20  # seconds any one step may take before the test fails
PASSWORD = "correct horse battery"


# ---------------------------------------------------------------- servers


def start(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Server:
    instance = tmp_path_factory.mktemp("instance")
    return Server(sqlite_url(tmp_path_factory), instance, workers=1, **env).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start(tmp_path_factory)
    yield running
    running.stop_soon()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server, where anyone may register."""
    running = start(tmp_path_factory, REGISTRATION_ENABLED="1")
    yield running
    running.stop_soon()


@pytest.fixture(scope="module")
def admin(server: Server) -> str:
    return server.login()


def unique(stem: str) -> str:
    return f"{stem}-{secrets.token_hex(4)}"


def person(server: Server, role: str = "reporter") -> tuple[str, str]:
    """A fresh user (so that a test sees only what it made): (username, password)."""
    name = unique(role)
    admin_token = server.login()
    server.rpc("user_create", admin_token, 201, username=name, password=PASSWORD, role=role)
    return name, PASSWORD


# ---------------------------------------------------------------- the client


class Cli:
    """`python client.py ...` with a HOME of its own, pointed at one server."""

    def __init__(self, home: Path, url: str) -> None:
        self.home, self.url = home, url
        self.tokens_file = home / "config" / "incident_rpc" / "tokens.json"

    def env(self, **extra: str) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("INCIDENT_RPC_")}  # fmt: skip
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / "config"))
        env.update(INCIDENT_RPC_URL=self.url, **extra)
        return env

    def run(
        self, *args: str, expect: int = 0, stdin: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, str(CLIENT), *args], cwd=ROOT, env=self.env(**env), text=True,
            input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True, timeout=TIMEOUT,
            start_new_session=True,  # no terminal: a stray prompt fails instead of waiting
        )  # fmt: skip
        assert done.returncode == expect, (args, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.run(*args, "--json", **env).stdout)

    def sign_in(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> None:
        self.run("login", username, "--password", password)

    def saved_tokens(self) -> dict[str, str]:
        return json.loads(self.tokens_file.read_text())

    def background(self, *args: str) -> "Background":
        return Background(self, args)


@pytest.fixture
def cli(tmp_path: Path, server: Server) -> Cli:
    return Cli(tmp_path, server.url)


@pytest.fixture
def admin_cli(cli: Cli) -> Cli:
    cli.sign_in()
    return cli


class Background:
    """A client that runs on (watch, a slow list) while the test acts; its lines collected."""

    def __init__(self, cli: Cli, args: tuple[str, ...]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(CLIENT), *args], cwd=ROOT, env=cli.env(), text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.out: queue.Queue[str | None] = queue.Queue()  # None: the end
        self.err: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def line(self) -> str | None:
        return self.out.get(timeout=TIMEOUT)

    def error_line(self, matching: str) -> str:
        """The next line on stderr that contains `matching` (the ones before it are kept)."""
        while True:
            line = self.err.get(timeout=TIMEOUT)
            assert line is not None, f"no {matching!r} before the end: {self.stderr}"
            self.stderr.append(line)
            if matching in line:
                return line

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C; the exit status and the rest of stderr."""
        self.process.send_signal(signal.SIGINT)
        return self.finish()

    def finish(self) -> tuple[int, str]:
        status = self.process.wait(TIMEOUT)
        for reader in self.readers:  # to the end of both pipes, before they are closed
            reader.join(TIMEOUT)
        while (line := self.err.get(timeout=TIMEOUT)) is not None:
            self.stderr.append(line)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()
        stderr = "\n".join(self.stderr)
        assert "Traceback" not in stderr, stderr
        return status, stderr


# The child makes the pseudo-terminal on its stdin its controlling terminal, then becomes
# client.py: getpass reads /dev/tty, and ^C typed there is a SIGINT, as in a shell.
TAKE_TERMINAL = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class Terminal:
    """client.py on a terminal of its own, typed at as a person would."""

    def __init__(self, cli: Cli, *args: str) -> None:
        self.master, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [sys.executable, "-c", TAKE_TERMINAL, str(CLIENT), *args], cwd=ROOT, env=cli.env(),
            stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
        )  # fmt: skip
        os.close(terminal)
        self.screen = b""

    def _read(self, deadline: float) -> bytes:
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return b""
        try:
            return os.read(self.master, 4096)
        except OSError:  # EIO: the client has closed the terminal
            return b""

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while text.encode() not in self.screen:
            chunk = self._read(deadline)
            assert chunk, f"no {text!r} on the screen: {self.screen!r}"
            self.screen += chunk

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self) -> tuple[int, str]:
        deadline = time.monotonic() + TIMEOUT
        while chunk := self._read(deadline):
            self.screen += chunk
        status = self.process.wait(TIMEOUT)
        os.close(self.master)
        return status, self.screen.decode(errors="replace")


# ---------------------------------------------------------------- fakes


class FakeHttp:
    """A loopback HTTP server that answers every POST with `answer(path)`: (status,
    content type, body), or None to keep the client waiting until the test ends."""

    def __init__(self, answer: Callable[[str], tuple[int, str, bytes] | None]) -> None:
        release = self.release = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                said = answer(self.path)
                if said is None:
                    release.wait(TIMEOUT)
                    return
                status, content_type, body = said
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(TIMEOUT)


def envelope(data: Any, status: int = 200) -> tuple[int, str, bytes]:
    body = {"success": True, "error": "", "status": status, "data": data}
    return status, "application/json", json.dumps(body).encode()


def receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        assert chunk, "the client hung up"
        data += chunk
    return data


class FakeEvents:
    """A loopback WebSocket server that greets its first client with `messages` (as a
    server that says `subscribed` first would), then keeps the socket open."""

    ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.hello: dict[str, Any] = {}
        self.connection: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        self.connection = connection
        request = b""
        while b"\r\n\r\n" not in request:
            request += connection.recv(4096)
        found = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", request)
        assert found is not None, request
        accept = base64.b64encode(hashlib.sha1(found.group(1) + self.ACCEPT_GUID).digest())
        connection.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.hello = json.loads(self._client_frame(connection))
        for message in self.messages:
            payload = json.dumps(message).encode()
            assert len(payload) < 126  # one short text frame, unmasked as a server's are
            connection.sendall(bytes([0x81, len(payload)]) + payload)

    @staticmethod
    def _client_frame(connection: socket.socket) -> bytes:
        _, length = receive_exactly(connection, 2)
        length &= 0x7F
        if length >= 126:
            length = int.from_bytes(receive_exactly(connection, 2 if length == 126 else 8))
        mask = receive_exactly(connection, 4)
        masked = receive_exactly(connection, length)
        return bytes(byte ^ mask[index % 4] for index, byte in enumerate(masked))

    def close(self) -> None:
        self.thread.join(TIMEOUT)
        if self.connection is not None:
            self.connection.close()
        self.listener.close()


# ---------------------------------------------------------------- every action


# The command that sends each action (user_update also: users disable, enable, reset-password).
COMMAND_OF = {
    "authorization": "login", "logout": "logout", "whoami": "whoami",
    "password_change": "passwd", "register": "register",
    "create": "create", "get_all": "list", "get": "get", "update": "update",
    "resolve": "resolve", "acknowledge": "acknowledge", "assign": "assign",
    "comment": "comment", "comments": "comments",
    "history": "history", "resolve_many": "resolve-many", "update_many": "update-many",
    "user_create": "users create", "user_list": "users list", "user_update": "users role",
    "key_create": "keys create", "key_list": "keys list", "key_revoke": "keys revoke",
    "silence_create": "silences create", "silence_list": "silences list",
    "silence_expire": "silences expire", "silence_history": "silences history", "stats": "stats",
    "channel_create": "channels create", "channel_list": "channels list",
    "channel_update": "channels update", "channel_delete": "channels delete",
    "channel_test": "channels test", "delivery_list": "deliveries list",
    "delivery_retry": "deliveries retry", "describe": "describe",
}  # fmt: skip


def commands_in_help(help_text: str) -> set[str]:
    """The command names argparse lists under COMMAND."""
    return set(re.findall(r"(?m)^    ([a-z][a-z-]*)(?:\s|$)", help_text))


def test_every_action_of_the_server_has_a_command(tmp_path: Path, open_server: Server) -> None:
    described = {m["name"] for m in open_server.rpc("describe", expect=200)["data"]["methods"]}
    missing = described - set(COMMAND_OF)
    assert not missing, f"client.py has no command for {sorted(missing)}: add one"
    cli = Cli(tmp_path, open_server.url)
    listed = commands_in_help(cli.run("--help").stdout)
    for group in ("users", "keys", "silences", "channels", "deliveries"):
        listed |= {f"{group} {name}" for name in commands_in_help(cli.run(group, "--help").stdout)}
    assert set(COMMAND_OF.values()) <= listed
    assert {"users disable", "users enable", "users reset-password", "batch", "call"} <= listed
    assert "assign  " in cli.run("describe").stdout


def test_call_reaches_any_action_by_name(admin_cli: Cli, server: Server, admin: str) -> None:
    made = server.rpc("create", admin, 201, description="called by name")["data"]
    assert admin_cli.json("call", "get", f"id={made['id']}") == made
    failed = admin_cli.run("call", "frobnicate", f"id={made['id']}", expect=1)
    assert failed.stderr == "error 404: unknown action 'frobnicate'\n"


# ---------------------------------------------------------------- output and options


def test_json_goes_before_or_after_the_command(admin_cli: Cli, server: Server, admin: str):
    made = server.rpc("create", admin, 201, description="json either side")["data"]
    before = json.loads(admin_cli.run("--json", "get", str(made["id"])).stdout)
    after = json.loads(admin_cli.run("get", str(made["id"]), "--json").stdout)
    assert before == after == made
    assert admin_cli.json("whoami") == {"username": ADMIN[0], "role": "admin"}
    assert made["id"] in {incident["id"] for incident in admin_cli.json("list")["incidents"]}
    assert admin_cli.json("comments", str(made["id"])) == {"comments": []}
    assert [event["type"] for event in admin_cli.json("history", str(made["id"]))["events"]] == [
        "added"
    ]
    assert ADMIN[0] in {user["username"] for user in admin_cli.json("users", "list")["users"]}
    # --url goes anywhere too
    other = Cli(admin_cli.home, "http://127.0.0.1:9")
    assert other.json("whoami", "--url", server.url)["username"] == ADMIN[0]


def test_one_incident_reads_as_a_few_aligned_lines(admin_cli: Cli, server: Server, admin: str):
    made = server.rpc(
        "create", admin, 201, description="Scooter 875643 offline", title="Scooter offline",
        severity="high", source="monitoring", details={"zone": "north"},
    )["data"]  # fmt: skip
    lines = admin_cli.run("get", str(made["id"])).stdout.splitlines()
    assert lines[0] == f"#{made['id']}  Scooter offline"
    assert "  description  Scooter 875643 offline" in lines
    assert "  status       new" in lines
    assert "  severity     high" in lines
    assert "  source       monitoring" in lines
    assert "  assignee     nobody" in lines
    assert '  details      {"zone": "north"}' in lines
    assert not any(line.lstrip().startswith(("{", '"')) for line in lines)  # no dict dump
    assert len(lines) < 12


def test_an_empty_list_says_no_incidents(cli: Cli, server: Server) -> None:
    cli.sign_in(*person(server))  # a reporter sees only its own incidents: none yet
    assert cli.run("list").stdout == "no incidents\n"
    assert cli.run("list", "--all").stdout == "no incidents\n"
    assert cli.json("list") == {"incidents": [], "next_cursor": None}


def test_list_all_follows_every_page(cli: Cli, server: Server) -> None:
    name, password = person(server)
    token = server.login(name, password)
    made = [server.rpc("create", token, 201, description=f"page {n}")["data"] for n in range(5)]
    cli.sign_in(name, password)
    done = cli.run("list", "--all", "--limit", "2")
    rows = done.stdout.splitlines()
    assert [row.split()[0] for row in rows] == [f"#{m['id']}" for m in reversed(made)]
    assert done.stderr.splitlines() == [
        "-- page 1: 2 incidents, more to come",
        "-- page 2: 4 incidents, more to come",
        "-- page 3: 5 incidents",
    ]
    everything = cli.json("list", "--all", "--limit", "2")
    assert everything == {"incidents": list(reversed(made)), "next_cursor": None}
    one_page = cli.run("list", "--limit", "2")
    assert len(one_page.stdout.splitlines()) == 3 and "(or --all)" in one_page.stdout


@pytest.mark.parametrize(
    ("command", "values"),
    [
        ("create", ["{low,medium,high,critical}", "{operator,monitoring,partner,unknown}"]),
        ("list", ["{new,processing,completed,fake,unknown}", "{low,medium,high,critical}"]),
        ("update", ["{new,processing,completed,fake,unknown}", "{operator,monitoring,partner,"]),
        ("users create", ["{reporter,agent,admin}"]),
    ],
)
def test_help_shows_the_allowed_values(cli: Cli, command: str, values: list[str]) -> None:
    shown = cli.run(*command.split(), "--help").stdout
    for value in values:
        assert value in shown


def test_exit_codes_and_errors_on_stderr(admin_cli: Cli) -> None:
    refused = admin_cli.run("create", "x", "--severity", "huge", expect=2)
    assert "invalid choice: 'huge'" in refused.stderr and refused.stdout == ""
    assert "unrecognized" in admin_cli.run("get", "1", "--stauts", "new", expect=2).stderr
    admin_cli.run("frobnicate", expect=2)
    missing = admin_cli.run("get", "999999999", expect=1)
    assert (missing.stdout, missing.stderr) == ("", "error 404: no incident with id 999999999\n")
    invalid = admin_cli.run("create", " ", expect=1)
    assert invalid.stderr.startswith("error 400: ") and "description" in invalid.stderr
    usage = admin_cli.run("resolve-many", expect=2)
    assert "give incident ids or --filter" in usage.stderr


# ---------------------------------------------------------------- signing in


def test_one_saved_token_per_server(cli: Cli, server: Server, open_server: Server) -> None:
    there = Cli(cli.home, open_server.url)
    name = unique("visitor")
    there.run("register", name, "--password", PASSWORD)
    cli.sign_in()
    there.sign_in(name, PASSWORD)  # signing in there leaves the first server's token alone
    assert cli.run("whoami").stdout == f"admin (admin) at {server.url}\n"
    assert there.run("whoami").stdout == f"{name} (reporter) at {open_server.url}\n"
    assert set(cli.saved_tokens()) == {server.url, open_server.url}
    assert stat.S_IMODE(cli.tokens_file.stat().st_mode) == 0o600
    there.run("logout")
    assert set(cli.saved_tokens()) == {server.url}
    assert cli.run("whoami").stdout.startswith("admin (admin)")


def test_a_failed_sign_in_does_not_say_to_sign_in(cli: Cli) -> None:
    failed = cli.run("login", ADMIN[0], "--password", "not the password", expect=1)
    assert failed.stderr == "error 401: Invalid credentials\n"
    unsigned = cli.run("list", expect=1)
    assert unsigned.stderr == (
        f"error 401: Token is required (sign in with: client.py --url {cli.url} login USERNAME)\n"
    )


def test_whoami_and_logout(cli: Cli, server: Server) -> None:
    name, password = person(server, "agent")
    cli.sign_in(name, password)
    assert cli.run("whoami").stdout == f"{name} (agent) at {server.url}\n"
    token = cli.saved_tokens()[server.url]
    assert cli.run("logout").stdout == f"signed out of {server.url}\n"
    assert cli.saved_tokens() == {}
    server.rpc("whoami", token, 401)  # ended on the server, not only forgotten here
    assert "sign in with" in cli.run("whoami", expect=1).stderr


def test_password_change_at_the_prompts(cli: Cli, server: Server) -> None:
    name, password = person(server)
    cli.sign_in(name, password)
    old_token = cli.saved_tokens()[server.url]
    terminal = Terminal(cli, "passwd")
    terminal.wait_for("current password: ")
    terminal.type(password + "\n")
    terminal.wait_for("new password for you: ")
    terminal.type("a brand new password\n")
    terminal.wait_for("the same again: ")
    terminal.type("a brand new password\n")
    status, screen = terminal.finish()
    assert status == 0, screen
    assert "password changed" in screen and "a brand new" not in screen  # not echoed
    server.rpc("whoami", old_token, 401)
    server.rpc("whoami", cli.saved_tokens()[server.url], 200)  # the fresh one is saved
    server.login(name, "a brand new password")


def test_sign_in_at_the_prompt(cli: Cli, server: Server) -> None:
    terminal = Terminal(cli, "login", ADMIN[0])
    terminal.wait_for(f"password for {ADMIN[0]}: ")
    terminal.type(ADMIN[1] + "\n")
    status, screen = terminal.finish()
    assert status == 0 and f"signed in to {server.url} as admin" in screen, screen
    assert ADMIN[1] not in screen


@pytest.mark.parametrize(
    ("command", "prompt"),
    [("login admin", "password for admin: "), ("users create someone", "new password for")],
)
def test_ctrl_c_at_a_prompt_exits_130(admin_cli: Cli, command: str, prompt: str) -> None:
    terminal = Terminal(admin_cli, *command.split())
    terminal.wait_for(prompt)
    terminal.type("\x03")
    status, screen = terminal.finish()
    assert status == 130 and "Traceback" not in screen, screen


def test_register_where_the_server_allows_it(tmp_path: Path, cli: Cli, open_server: Server):
    name = unique("newcomer")
    there = Cli(tmp_path, open_server.url)
    done = there.run("register", name, "--password", PASSWORD)
    assert done.stdout == f"registered {name} (reporter); sign in with: client.py login {name}\n"
    open_server.login(name, PASSWORD)
    refused = cli.run("register", name, "--password", PASSWORD, expect=1)
    assert refused.stderr == "error 404: unknown action 'register'\n"


# ---------------------------------------------------------------- teams


def test_comment_comments_history_and_assign(cli: Cli, server: Server) -> None:
    agent, password = person(server, "agent")
    cli.sign_in(agent, password)
    made = cli.json("create", "Disk full on db-3", "--severity", "critical")
    number = str(made["id"])
    note = cli.run("comment", number, "cleaning /var/log").stdout
    assert re.fullmatch(rf"comment #\d+ on incident #{number}\n", note)
    (line,) = cli.run("comments", number).stdout.splitlines()
    assert line.endswith(f"  {agent}: cleaning /var/log")
    assigned = cli.run("assign", number, agent).stdout
    assert f"  assignee     {agent}" in assigned.splitlines()
    assert "  assignee     nobody" in cli.run("assign", number, "-").stdout.splitlines()
    trail = cli.run("history", number).stdout.splitlines()
    assert [line.split()[1] for line in trail] == ["added", "commented", "assigned", "assigned"]
    assert trail[2].endswith(f"by {agent}  assignee {agent}")
    assert trail[3].endswith(f"assignee {agent} -> null")
    assert cli.run("comments", str(made["id"] + 10**6), expect=1).stderr.startswith("error 404")


def test_acknowledge_by_id_or_dedup_key(cli: Cli, server: Server) -> None:
    agent, password = person(server, "agent")
    token = server.login(agent, password)
    key = unique("pump")
    by_key = server.rpc("create", token, 201, description="pump 1", dedup_key=key)["data"]
    by_id = server.rpc("create", token, 201, description="pump 2")["data"]
    cli.sign_in(agent, password)
    lines = cli.run("acknowledge", str(by_id["id"])).stdout.splitlines()
    assert "  status       processing" in lines
    assert any(line.startswith("  acknowledged 20") and line.endswith(f" by {agent}")
               for line in lines)  # fmt: skip
    assert cli.json("acknowledge", "--dedup-key", key)["id"] == by_key["id"]
    assert cli.run("acknowledge", expect=2).stderr.endswith("one of the two\n")
    both = cli.run("acknowledge", str(by_id["id"]), "--dedup-key", key, expect=2)
    assert both.stderr.endswith("one of the two\n")
    assert cli.run("acknowledge", "--dedup-key", unique("none"), expect=1).stderr.startswith(
        "error 404"
    )


def test_bulk_commands(cli: Cli, server: Server) -> None:
    agent, password = person(server, "agent")
    token = server.login(agent, password)
    prefix = unique("storm") + ":"
    made = [server.rpc("create", token, 201, description=f"disk {n}", dedup_key=f"{prefix}{n}")
            ["data"]["id"] for n in range(3)]  # fmt: skip
    cli.sign_in(agent, password)
    done = cli.run("resolve-many", str(made[0]), str(made[0] + 10**6), "--resolution", "freed")
    assert done.stdout == f"changed 1: #{made[0]}\nskipped #{made[0] + 10**6}: not found\n"
    changed = cli.json("update-many", "--filter", f"dedup_key_prefix={prefix}",
                       "--filter", "status=new,processing", "--severity", "low")  # fmt: skip
    assert changed == {"changed": 2, "ids": made[1:], "skipped": []}
    assert cli.json("get", str(made[2]))["severity"] == "low"


def test_user_commands(admin_cli: Cli, server: Server) -> None:
    name = unique("carol")
    created = admin_cli.run("users", "create", name, "--role", "agent", "--password", PASSWORD)
    assert created.stdout.split()[:3] == [name, "agent", "active"]
    listed = [line.split()[:3] for line in admin_cli.run("users", "list").stdout.splitlines()]
    assert [name, "agent", "active"] in listed
    assert admin_cli.run("users", "role", name, "reporter").stdout.split()[1] == "reporter"
    token = server.login(name, PASSWORD)
    assert admin_cli.run("users", "disable", name).stdout.split()[2] == "disabled"
    server.rpc("whoami", token, 401)
    server.rpc("authorization", None, 401, username=name, password=PASSWORD)
    assert admin_cli.run("users", "enable", name).stdout.split()[2] == "active"
    admin_cli.run("users", "reset-password", name, "--password", "another password")
    server.login(name, "another password")
    assert admin_cli.run("users", "role", "nobody-at-all", "agent", expect=1).stderr.startswith(
        "error 404"
    )


def test_key_commands(admin_cli: Cli, server: Server) -> None:
    name = unique("nagios")
    made = admin_cli.run("keys", "create", name, "--role", "monitor").stdout.splitlines()
    found = re.fullmatch(rf"key #(\d+) {name} \(monitor\): (\S+)", made[0])
    assert found and "shown this once" in made[1], made
    number, key = found.groups()
    agent = Cli(admin_cli.home, server.url)
    agent.run("create", "from the agent", INCIDENT_RPC_TOKEN=key)
    rows = admin_cli.run("keys", "list").stdout.splitlines()
    assert any(row.startswith(f"#{number} ") and name in row for row in rows)
    assert key not in "\n".join(rows)
    assert "revoked" in admin_cli.run("keys", "revoke", number).stdout
    refused = agent.run("create", "after the revocation", expect=1, INCIDENT_RPC_TOKEN=key)
    assert refused.stderr.startswith("error 401")


def test_silence_commands(admin_cli: Cli, server: Server) -> None:
    key = unique("db")
    made = admin_cli.json(
        "silences", "create", "--dedup-key", f"{key}-*", "--label", "team=db",
        "--duration", "600", "--comment", "patching",
    )  # fmt: skip
    assert made["matchers"] == {"dedup_key": f"{key}-*", "labels": {"team": "db"}}
    assert made["state"] == "active" and made["comment"] == "patching"
    rows = admin_cli.run("silences", "list", "--state", "active").stdout.splitlines()
    assert any(row.startswith(f"#{made['id']} ") and "patching" in row for row in rows), rows
    ended = admin_cli.run("silences", "expire", str(made["id"])).stdout
    assert f"#{made['id']}" in ended and "expired" in ended
    trail = admin_cli.run("silences", "history", str(made["id"])).stdout.splitlines()
    assert [line.split()[1] for line in trail] == ["silence_created", "silence_expired"], trail
    assert "comment patching" in trail[0], trail
    refused = admin_cli.run("silences", "create", "--duration", "60", expect=1)
    assert refused.stderr.startswith("error 400"), refused.stderr


def test_channel_and_delivery_commands(admin_cli: Cli) -> None:
    """On the shared server, where loopback webhooks are refused (no
    WEBHOOK_ALLOW_PRIVATE): the refusal is the client's error 400; a Telegram channel
    needs no address check, and its token never shows again."""
    refused = admin_cli.run("channels", "create", "hook", "webhook", "--hook-url",
                            "http://127.0.0.1:9/hook", expect=1)  # fmt: skip
    assert refused.stderr.startswith("error 400"), refused.stderr
    name = unique("ops-chat")
    made = admin_cli.json(
        "channels", "create", name, "telegram", "--bot-token", "123456:secret-bot-token",
        "--chat-id", "-100200", "--events", "added", "acknowledged", "--min-severity", "high",
    )  # fmt: skip
    assert made["rule"]["events"] == ["added", "acknowledged"] and made["kind"] == "telegram"
    listed = admin_cli.run("channels", "list").stdout
    assert name in listed and "secret-bot-token" not in listed, listed
    disabled = admin_cli.run("channels", "update", str(made["id"]), "--disable").stdout
    assert "disabled" in disabled
    assert (
        "no deliveries" in admin_cli.run("deliveries", "list", "--channel", str(made["id"])).stdout
    )
    assert "deleted" in admin_cli.run("channels", "delete", str(made["id"])).stdout


# ---------------------------------------------------------------- batches


def test_batch_from_a_file_and_from_stdin(admin_cli: Cli, tmp_path: Path) -> None:
    commands = tmp_path / "commands.json"
    commands.write_text(json.dumps([
        {"action": "create", "description": "batched", "severity": "high"},
        {"action": "get", "id": 10**9},
        {"action": "whoami"},
    ]))  # fmt: skip
    done = admin_cli.run("batch", str(commands), expect=1)  # one of them failed
    first, second, third = done.stdout.splitlines()
    assert re.fullmatch(r"\[1\] 201 #\d+ +new +high +batched", first)
    assert second == f"[2] error 404: no incident with id {10**9}"
    assert third == '[3] 200 {"username": "admin", "role": "admin"}'
    whoami = '[{"action": "whoami"}]'
    answers = json.loads(admin_cli.run("batch", "-", "--json", stdin=whoami).stdout)
    assert answers == [{"success": True, "error": "", "status": 200,
                        "data": {"username": "admin", "role": "admin"}}]  # fmt: skip
    assert admin_cli.run("batch", "-", stdin="[]", expect=1).stderr == (
        "error 400: a batch needs at least one command\n"
    )
    assert "is not JSON" in admin_cli.run("batch", "-", stdin="[{", expect=2).stderr


# ---------------------------------------------------------------- not the service


@pytest.fixture
def fake_http(request: pytest.FixtureRequest) -> Iterator[FakeHttp]:
    fake = FakeHttp(request.param)
    yield fake
    fake.close()


NOT_JSON = (200, "text/html", b"<html>a router's login page</html>")
NO_ENVELOPE = (404, "application/json", b'{"message": "Not Found"}')


@pytest.mark.parametrize(
    ("fake_http", "reason"),
    [(lambda path: NOT_JSON, "HTTP 200, not JSON"),
     (lambda path: NO_ENVELOPE, "HTTP 404, JSON without the envelope")],
    indirect=["fake_http"],
)  # fmt: skip
def test_a_url_that_is_not_the_service_says_so(cli: Cli, fake_http: FakeHttp, reason: str):
    failed = cli.run("--url", fake_http.url, "list", expect=1)
    expected = f"error: {fake_http.url}/ does not look like an incident_rpc server ({reason})\n"
    assert failed.stderr == expected


def test_nothing_listening_or_the_wrong_path_says_so(cli: Cli, server: Server) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    failed = cli.run("--url", closed, "whoami", expect=1)
    expected = f"error: {closed}/ does not look like an incident_rpc server (connection refused)\n"
    assert failed.stderr == expected
    below = cli.run("--url", f"{server.url}/api", "list", expect=1).stderr
    assert below.startswith(f"error: {server.url}/api/ does not look like an incident_rpc server")
    cli.run("--url", f"{server.url}/rpc/", "login", ADMIN[0], "--password", ADMIN[1])
    assert cli.run("whoami").stdout.startswith("admin")  # .../rpc and ... are one server


def test_ctrl_c_during_list_all_exits_130(cli: Cli) -> None:
    incident = {"id": 1, "status": "new", "severity": "low", "title": "the only one"}
    pages = iter([envelope({"incidents": [incident], "next_cursor": "next"})])
    fake = FakeHttp(lambda path: next(pages, None))  # a page that promises more; then silence
    try:
        listing = Background(Cli(cli.home, fake.url), ("list", "--all"))
        listing.error_line("-- page 1: 1 incident, more to come")
        assert listing.line().startswith("#1 ")
        status, _ = listing.interrupt()
        assert status == 130
    finally:
        fake.close()


# ---------------------------------------------------------------- watch


def last_event_id(server: Server, token: str) -> int:
    made = server.rpc("create", token, 201, description="an event to start from")["data"]
    return server.rpc("history", token, 200, id=made["id"])["data"]["events"][-1]["id"]


def test_watch_says_where_it_is_live_from(admin_cli: Cli, server: Server, admin: str) -> None:
    since = last_event_id(server, admin)
    watcher = admin_cli.background("watch", "--since", str(since))
    assert watcher.error_line("connected") == f"connected, live from event {since}"
    made = server.rpc("create", admin, 201, description="seen live")["data"]
    line = watcher.line()
    assert f"added     incident #{made['id']} [new] seen live  by admin" in line
    status, _ = watcher.interrupt()
    assert status == 130
    seen = server.rpc("history", admin, 200, id=made["id"])["data"]["events"][-1]["id"]
    live = admin_cli.background("watch", "--json")  # the server's greeting says where
    connected, position = live.error_line("connected").rsplit(" ", 1)
    assert connected == "connected, live from event"
    assert (
        int(position) <= seen
    )  # the last final event: lower while an older transaction holds events back
    made = server.rpc("create", admin, 201, description="seen live too")["data"]
    assert json.loads(live.line())["data"] == made
    assert live.interrupt()[0] == 130


def test_watch_takes_a_subscribed_greeting(cli: Cli) -> None:
    event = {"type": "added", "id": 42, "actor": "admin", "data": {"id": 7, "status": "new"}}
    fake = FakeEvents([{"type": "subscribed", "position": 41}, event])
    try:
        watcher = Background(Cli(cli.home, fake.url), ("watch", "--json"))
        assert watcher.error_line("connected") == "connected, live from event 41"
        assert json.loads(watcher.line()) == event  # the greeting itself is no event
        assert watcher.interrupt()[0] == 130
        assert set(fake.hello) == {"token"}  # the token goes in the first message
    finally:
        fake.close()


def test_watch_gives_up_after_its_retries_unless_forever(cli: Cli) -> None:
    closed = Cli(cli.home, f"http://127.0.0.1:{free_port()}")
    done = closed.run("watch", "--retries", "2", expect=1)
    assert done.stderr.count("reconnecting") == 2
    assert "watch gave up after 3 failed attempts in a row" in done.stderr
    assert "--forever keeps trying" in done.stderr
    forever = closed.background("watch", "--retries", "2", "--forever")
    for _ in range(3):  # one more than --retries 2 allows
        forever.error_line("reconnecting")
    assert forever.process.poll() is None
    assert forever.interrupt()[0] == 130
