"""A new user's first hour: settings that explain themselves, logs you can see, the
CLI by the rules, secrets that production refuses, tracebacks without SQL values.

Every test drives a real gunicorn (or `flask`, or `make run`) and reads what it
prints, as a user would.
"""

import ast
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests
from sqlalchemy.engine import make_url
from support import ADMIN, ROOT, Server, free_port

# What a server of ours inherits: nothing of the test run's own settings.
BASE_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def start_to_fail(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """gunicorn with these settings on an empty SQLite database, run until it exits."""
    settings = {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        **env,
    }
    command = [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind",
               f"127.0.0.1:{free_port()}", "--workers", "1", "--no-control-socket"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env={**BASE_ENV, **settings}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # it started: stop it and its workers, then fail
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"gunicorn started with {env}:\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def assert_refused_in_the_master(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode != 0
    assert "cannot start; fix these settings" in done.stderr
    for sign_of_a_worker in ("Booting worker", "Worker failed to boot", "Traceback"):
        assert sign_of_a_worker not in done.stderr, done.stderr


# -- settings that explain themselves ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TOKEN_TTL", "1h", "a whole number, at least 1"),
        ("DB_POOL_SIZE", "-1", "a whole number, at least 1"),
        ("MAX_BULK", "65537", "between 1 and 65536"),
        ("PORT", "70000", "between 1 and 65535"),
        ("NOTIFY_SENDER_NICE", "20", "between 0 and 19"),
        ("GUNICORN_THREADS", "many", "a whole number, at least 1"),
        ("EVENTS_PING_INTERVAL", "0", "a number of seconds greater than 0"),
        ("EVENTS_SEND_TIMEOUT", "nan", "a number, at least 0"),
        ("REGISTRATION_ENABLED", "maybe", "1 or 0"),
        ("LOG_LEVEL", "verbose", "one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("INCIDENT_RPC_ENV", "prod", "one of development, production"),
        ("GUNICORN_WORKER_CLASS", "threads", "one of gevent, gthread, sync"),
        ("ADMIN_USERNAME", "key:nagios", "the username rule of user_create"),
    ],
)
def test_a_bad_setting_stops_the_master_naming_it(tmp_path, name, value, expected) -> None:
    done = start_to_fail(tmp_path, **{name: value})
    assert_refused_in_the_master(done)
    assert f"{name} must be {expected}" in done.stderr or f"{name} must follow" in done.stderr
    assert expected in done.stderr and repr(value) in done.stderr


def test_every_bad_setting_is_named_at_once(tmp_path) -> None:
    done = start_to_fail(tmp_path, TOKEN_TTL="1h", GUNICORN_TIMEOUT="soon", AUTO_MIGRATE="sure")
    assert_refused_in_the_master(done)
    for name in ("TOKEN_TTL='1h'", "GUNICORN_TIMEOUT", "AUTO_MIGRATE"):
        assert name.split("=")[0] in done.stderr
    assert "not '1h'" in done.stderr and "not 'soon'" in done.stderr


def test_a_database_url_that_does_not_parse_is_named_but_not_shown(tmp_path) -> None:
    done = start_to_fail(tmp_path, DATABASE_URL="postgres//app:hunter22@db/app")
    assert_refused_in_the_master(done)
    assert "DATABASE_URL must be a URL such as" in done.stderr
    assert "hunter22" not in done.stderr


STRONG_KEY = secrets.token_urlsafe(48)


@pytest.mark.parametrize(
    ("settings", "message", "secret"),
    [
        ({"SECRET_KEY": " "}, "SECRET_KEY must be set", None),
        ({"SECRET_KEY": "x"}, "SECRET_KEY must be at least 32 bytes", None),
        ({"SECRET_KEY": "weak-but-a-secret"}, "at least 32 bytes", "weak-but-a-secret"),
        ({"SECRET_KEY": "z" * 64}, "at least 8 different characters", "z" * 64),
        ({"SECRET_KEY": "abcd" * 10}, "at least 8 different characters", "abcd" * 10),
        (
            {"SECRET_KEY": STRONG_KEY, "ADMIN_USERNAME": "root", "ADMIN_PASSWORD": "hunter2"},
            "ADMIN_PASSWORD must follow the password policy of user_create"
            " (between 8 and 256 characters)",
            "hunter2",
        ),
    ],
)
def test_production_refuses_weak_secrets(tmp_path, settings, message, secret) -> None:
    done = start_to_fail(tmp_path, INCIDENT_RPC_ENV="production", **settings)
    assert_refused_in_the_master(done)
    assert message in done.stderr
    if secret:
        assert secret not in done.stderr + done.stdout


def test_production_starts_with_strong_secrets(tmp_path) -> None:
    server = Server(
        f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "instance", workers=1,
        INCIDENT_RPC_ENV="production", SECRET_KEY=STRONG_KEY,
    ).start()  # fmt: skip
    try:
        server.login()
    finally:
        server.stop_soon()


# -- logs you can see ----------------------------------------------------------------------


@pytest.mark.parametrize("level", ["INFO", "WARNING"])
def test_the_first_administrator_is_logged_at_info(tmp_path, level) -> None:
    server = Server(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "i", LOG_LEVEL=level)
    server.start(output=tmp_path / "out")
    server.stop()
    log = (tmp_path / "out" / "stderr").read_text()
    created = f"[INFO] created the first administrator, {ADMIN[0]}"
    assert (created in log) == (level == "INFO"), log
    assert ("Starting gunicorn" in log) == (level == "INFO")  # gunicorn's own, at LOG_LEVEL too


def test_make_run_says_it_is_development_and_logs_each_request(tmp_path) -> None:
    venv = Path(sys.executable).parent.parent
    if not (venv / "bin" / "gunicorn").exists():
        pytest.skip(f"no gunicorn in {venv}, the virtualenv make run would use")
    port = free_port()
    env = {**BASE_ENV, "INSTANCE_PATH": str(tmp_path), "WEB_CONCURRENCY": "1",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}  # fmt: skip
    # -o: the virtualenv counts as installed; make must not (re)install into it.
    command = ["make", "--no-print-directory", "-o", f"{venv}/bin/.installed", "run",
               f"VENV={venv}", f"PORT={port}"]  # fmt: skip
    with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
        make = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True
        )
    try:
        server = Server("unused", tmp_path)
        server.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: ready(server.url), "make run to serve")
        server.login("admin", "admin")  # the development administrator, as it says
        wait_for(lambda: "POST /rpc" in (tmp_path / "stdout").read_text(), "an access line")
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)
    log = (tmp_path / "stderr").read_text()
    assert "development settings (INCIDENT_RPC_ENV=development): do not expose" in log
    assert "ADMIN_PASSWORD must follow the password policy" in log
    assert "created the first administrator, admin" in log


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/readyz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def wait_for(condition, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.1)


# -- failures log the statement, not the values -----------------------------------------------


def refuse_inserts(database_url: str) -> None:
    """A trigger that fails every insert into incidents, as a broken database might."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(url.database) as connection:
            connection.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON incidents"
                " BEGIN SELECT RAISE(ABORT, 'inserts are refused'); END"
            )
        return
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg2.connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'inserts are refused'; END $$;"
            " CREATE TRIGGER refuse BEFORE INSERT ON incidents"
            " FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    connection.close()


def test_a_failed_statement_is_logged_without_its_values(new_database_url, tmp_path) -> None:
    url = new_database_url()
    server = Server(url, tmp_path / "i").start(output=tmp_path / "out")
    try:
        token = server.login()
        refuse_inserts(url)
        secret = f"sk_live_{secrets.token_hex(12)}"
        failed = server.rpc("create", token, description=f"the key is {secret}", expect=500)
        request_id = failed["error"].rsplit(" ", 1)[-1]
    finally:
        server.stop()
    log = (tmp_path / "out" / "stderr").read_text()
    assert f"unhandled error, request id {request_id}" in log
    assert "INSERT INTO incidents" in log  # the statement is there; its values are not
    assert secret not in log


# -- the CLI goes by the rules of user_create -------------------------------------------------


@pytest.fixture
def cli_server(new_database_url, tmp_path) -> Iterator[Server]:
    server = Server(new_database_url(), tmp_path, workers=1).start()
    yield server
    server.stop_soon()


def flask_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("key:nagios", "a-long-password", "username: 3 to 64 characters"),
        (ADMIN[0].capitalize(), "a-long-password", f"the username '{ADMIN[0].capitalize()}'"),
        ("dora", "x", "password: Between 8 and 256 characters."),
    ],
)
def test_cli_user_create_refuses_what_the_action_refuses(
    cli_server: Server, username: str, password: str, message: str
) -> None:
    done = flask_cli(cli_server, "user-create", username, "--password", password)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr and password not in done.stderr + done.stdout
    users = cli_server.rpc("user_list", cli_server.login(), expect=200)["data"]["users"]
    assert [user["username"] for user in users] == [ADMIN[0]]


def test_cli_user_create_resets_an_existing_user(cli_server: Server) -> None:
    old_token = cli_server.login()
    done = flask_cli(cli_server, "user-create", ADMIN[0], "--password", "a-new-password")
    assert done.returncode == 0, done.stderr
    cli_server.rpc("whoami", old_token, expect=401)
    cli_server.login(ADMIN[0], "a-new-password")
    demoted = flask_cli(cli_server, "user-create", ADMIN[0], "--role", "agent", "--password",
                        "a-new-password")  # fmt: skip
    assert demoted.returncode != 0 and "no active administrator" in demoted.stderr


# -- docs/settings.md lists every setting, and only those ----------------------------------


def settings_read_in(path: Path) -> set[str]:
    """Names of the environment variables a module reads: through config.py's readers
    (`_int("TOKEN_TTL", ...)`), `os.environ.get`, `os.getenv` or `os.environ[...]`
    (not a WSGI request's `environ`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        key = None
        if isinstance(node, ast.Call) and node.args:
            function = node.func
            reader = isinstance(function, ast.Name) and function.id.startswith("_")
            environ = isinstance(function, ast.Attribute) and (
                function.attr == "getenv" or ast.unparse(function) == "os.environ.get"
            )
            key = node.args[0] if reader or environ else None
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
            key = node.slice
        if isinstance(key, ast.Constant) and re.fullmatch(r"[A-Z][A-Z0-9_]+", str(key.value)):
            names.add(key.value)
    return names


def test_docs_settings_table_matches_the_code() -> None:
    in_code = settings_read_in(ROOT / "incident_rpc" / "config.py") | settings_read_in(
        ROOT / "gunicorn.conf.py"
    )
    for module in (ROOT / "incident_rpc").rglob("*.py"):  # nothing else reads settings
        assert module.name == "config.py" or not settings_read_in(module), module
    rows = re.findall(
        r"^\| `([A-Z][A-Z0-9_]+)` \|", (ROOT / "docs" / "settings.md").read_text(), re.M
    )
    assert len(rows) == len(set(rows)), "a setting has two rows"
    assert sorted(in_code - set(rows)) == [], "settings read by the code without a row"
    assert sorted(set(rows) - in_code) == [], "rows for settings the code does not read"
