"""Deployment: the compose file, the image's contents, the health check, and a
database password that a URL could not carry."""

import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from support import ROOT, Server, free_port, system_tool
from test_operations import Cluster  # a PostgreSQL cluster of our own, here with passwords

# A password no URL survives unescaped, and compose passes on as it is.
AWKWARD_PASSWORD = "p@ss/w:rd%2F?x"
DEV_ONLY = {"pytest", "ruff", "requests", "websocket-client"}


def requirement_names(path: Path) -> set[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {re.split(r"[\[=<>~ ]", line)[0].lower() for line in lines if line}


# -- docker-compose.yml ---------------------------------------------------------------------


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    compose = system_tool("docker-compose", package="docker-compose")
    shutil.copy(ROOT / "docker-compose.yml", tmp_path)  # not beside a developer's own .env
    settings = {"SECRET_KEY": "k" * 8, "POSTGRES_PASSWORD": AWKWARD_PASSWORD,
                "ADMIN_PASSWORD": "admin-password", **env}  # fmt: skip
    return subprocess.run(
        [compose, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **settings},
    )  # fmt: skip


def test_compose_passes_the_database_password_apart_from_the_url(tmp_path) -> None:
    done = compose_config(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "DATABASE_URL: postgresql://incident_rpc@db:5432/incident_rpc\n" in done.stdout
    assert f"DATABASE_PASSWORD: {AWKWARD_PASSWORD}\n" in done.stdout


@pytest.mark.parametrize("name", ["ADMIN_PASSWORD", "SECRET_KEY", "POSTGRES_PASSWORD"])
def test_compose_refuses_an_empty_secret(tmp_path, name) -> None:
    done = compose_config(tmp_path, **{name: ""})
    assert done.returncode != 0
    assert f"set {name} in .env" in done.stderr


def test_compose_serves_and_checks_health_on_the_configured_port(tmp_path) -> None:
    done = compose_config(tmp_path, PORT="9000")
    assert done.returncode == 0, done.stderr
    assert "published: 9000\n      target: 9000\n" in done.stdout
    assert "PORT: '9000'\n" in done.stdout  # what the health check reads (below)


# -- the image ------------------------------------------------------------------------------


LOCAL_ONLY = [
    ".venv/bin/python",
    "instance/secret_key",
    "instance/incident_rpc.sqlite3",
    ".env",
    ".git/HEAD",
    "incident_rpc/__pycache__/config.cpython-311.pyc",
]


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    for path in LOCAL_ONLY:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        assert any(
            fnmatch.fnmatch(prefix, pattern.removeprefix("**/"))
            or fnmatch.fnmatch(parts[-1], pattern.removeprefix("**/"))
            for prefix in prefixes
            for pattern in patterns
        ), f"{path} would go into the build context"


def test_the_image_installs_only_runtime_requirements() -> None:
    runtime = requirement_names(ROOT / "requirements.txt")
    development = (ROOT / "requirements-dev.txt").read_text()
    assert runtime & DEV_ONLY == set()
    assert "-r requirements.txt" in development.splitlines()
    assert DEV_ONLY <= requirement_names(ROOT / "requirements-dev.txt") - {"-r"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "requirements-dev" not in dockerfile and "client.py" not in dockerfile
    assert "-r requirements-dev.txt" in (ROOT / "Makefile").read_text()


def test_what_the_image_runs_imports_no_development_package() -> None:
    modules = [*(ROOT / "incident_rpc").rglob("*.py"), ROOT / "wsgi.py", ROOT / "gunicorn.conf.py"]
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"pytest", "ruff", "requests", "websocket"}, (module, name)


# -- the health check follows the port ----------------------------------------------------------


def healthcheck(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PORT", "GUNICORN_BIND")}
    return subprocess.run(
        [sys.executable, "-m", "incident_rpc.healthcheck"], cwd=ROOT, env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_health_check_probes_the_address_gunicorn_binds(tmp_path) -> None:
    assert 'CMD ["python", "-m", "incident_rpc.healthcheck"]' in (ROOT / "Dockerfile").read_text()
    server = Server(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path, workers=1).start()
    try:
        assert healthcheck(GUNICORN_BIND=f"127.0.0.1:{server.port}").returncode == 0
        idle = free_port()
        refused = healthcheck(GUNICORN_BIND=f"127.0.0.1:{idle}")
        assert refused.returncode == 1 and "not ready" in refused.stderr
    finally:
        server.stop_soon()


def test_the_health_check_reads_port_when_no_bind_is_given() -> None:
    from incident_rpc.healthcheck import probe_url

    assert probe_url("0.0.0.0:9000") == "http://127.0.0.1:9000/readyz"
    assert probe_url("[::]:9000") == "http://127.0.0.1:9000/readyz"
    assert probe_url("[::1]:9000") == "http://[::1]:9000/readyz"
    done = healthcheck(PORT=str(free_port()))  # nothing listens there: not ready, on that port
    assert done.returncode == 1 and "Connection refused" in done.stderr


# -- a database password with '@', '/' and ':' ------------------------------------------------


@pytest.fixture
def password_cluster(postgres) -> Iterator[Cluster]:
    """A cluster of our own that checks passwords over TCP (the shared one trusts)."""
    cluster = Cluster()
    (cluster.data / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)


@pytest.mark.postgres
def test_a_database_password_no_url_could_carry(password_cluster: Cluster, tmp_path) -> None:
    local = {"host": str(password_cluster.data), "port": password_cluster.port}
    admin = psycopg2.connect(user="postgres", dbname="postgres", **local)
    admin.autocommit = True
    with admin.cursor() as cursor:  # a throwaway role and database, gone with the cluster
        cursor.execute("CREATE ROLE tracker LOGIN PASSWORD %s", (AWKWARD_PASSWORD,))
        cursor.execute("CREATE DATABASE tracker OWNER tracker")
    admin.close()
    tcp = {"host": "127.0.0.1", "port": password_cluster.port, "dbname": "tracker"}
    with pytest.raises(psycopg2.OperationalError, match="password"):  # passwords are checked
        psycopg2.connect(user="tracker", password="wrong", **tcp).close()

    url = f"postgresql://tracker@127.0.0.1:{password_cluster.port}/tracker"
    server = Server(url, tmp_path, workers=1, DATABASE_PASSWORD=AWKWARD_PASSWORD).start()
    try:
        token = server.login()
        created = server.rpc("create", token, description="Pump 4 offline", expect=201)
        assert server.rpc("get", token, id=created["data"]["id"], expect=200)["success"]
    finally:
        server.stop_soon()
