"""GET /metrics: the exposition parses, its values add up over every worker, and a real
Prometheus scraping the server finds the series and values the commands should leave.

Prometheus is Debian's `prometheus` binary, started on a free loopback port with a
scrape config written here (1 s interval, the METRICS_TOKEN as its bearer token);
without it those tests skip. Each server here has a database of its own, so every
count is exact.
"""

import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from support import ROOT, Server, free_port, system_tool

from incident_rpc.telemetry import metrics

METRICS_TOKEN = "metrics-token-for-tests"
TIMEOUT = 30


def exported_names() -> set[str]:
    """The metric families the service defines (telemetry/metrics.py), and the gauge that
    /metrics reads from the database."""
    names = {
        value._name for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)
    }
    return names | {f"{metrics.PREFIX}_open_incidents"}


def wait_for(probe: Callable[[], Any], what: str, seconds: float = TIMEOUT) -> Any:
    """probe()'s first truthy answer; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def metered(new_database_url, tmp_path_factory) -> Iterator[Server]:
    running = Server(new_database_url(), tmp_path_factory.mktemp("instance"),
                     METRICS_TOKEN=METRICS_TOKEN)  # fmt: skip
    yield running.start()
    running.stop_soon()


def scrape(server: Server) -> dict[str, Any]:
    """{sample name with sorted labels: value}; a fresh connection: any worker may answer."""
    response = requests.get(
        f"{server.url}/metrics", timeout=10,
        headers={"Authorization": f"Bearer {METRICS_TOKEN}", "Connection": "close"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return {
        _key(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _key(name: str, labels: dict[str, str]) -> str:
    return name + "".join(f",{k}={v}" for k, v in sorted(labels.items()))


def test_the_exposition_parses_with_names_types_and_help(metered: Server) -> None:
    response = requests.get(f"{metered.url}/metrics", timeout=10,
                            headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # fmt: skip
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    expected = {
        "incident_rpc_requests": "counter",
        "incident_rpc_request_duration_seconds": "histogram",
        "incident_rpc_incidents_created": "counter",
        "incident_rpc_incidents_acknowledged": "counter",
        "incident_rpc_incidents_resolved": "counter",
        "incident_rpc_time_to_acknowledge_seconds": "histogram",
        "incident_rpc_time_to_resolve_seconds": "histogram",
        "incident_rpc_dedup_hits": "counter",
        "incident_rpc_group_commit_size": "histogram",
        "incident_rpc_websocket_subscribers": "gauge",
        "incident_rpc_websocket_events_offered": "counter",
        "incident_rpc_open_incidents": "gauge",
        "process_resident_memory_bytes": "gauge",
    }
    assert {name: families[name].type for name in expected if name in families} == expected
    assert all(families[name].documentation for name in expected)
    assert set(expected) <= exported_names() | {"process_resident_memory_bytes"}


def test_counts_add_up_over_every_worker(metered: Server) -> None:
    """Each request on a connection of its own, so both workers serve some."""
    token = metered.login()
    before = scrape(metered)
    key = _key("incident_rpc_requests_total", {"action": "get_all", "dialect": "native",
                                                "status": "200"})  # fmt: skip
    for _ in range(12):
        answer = requests.post(f"{metered.url}/rpc", json={"action": "get_all", "token": token},
                               headers={"Connection": "close"}, timeout=10)  # fmt: skip
        assert answer.status_code == 200
    assert scrape(metered)[key] - before.get(key, 0) == 12


def test_the_action_label_holds_only_registered_names(metered: Server) -> None:
    for name in ("no_such_action", "x" * 40):
        metered.rpc(name, expect=404)
    metered.post("/incidents/no-such-thing/", {})
    samples = scrape(metered)
    actions = {key.split("action=")[1].split(",")[0] for key in samples if "action=" in key}
    assert "unknown" in actions and not {"no_such_action", "x" * 40, "no-such-thing"} & actions


def test_subscribers_are_a_live_gauge(metered: Server) -> None:
    gauge = "incident_rpc_websocket_subscribers"
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{metered.port}/ws?token={metered.login()}", timeout=TIMEOUT
    )
    try:
        wait_for(lambda: scrape(metered)[gauge] == 1, "one subscriber")
    finally:
        ws.close()
    wait_for(lambda: scrape(metered)[gauge] == 0, "no subscriber")


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": METRICS_TOKEN}, 401),
     ({"Authorization": f"Bearer {METRICS_TOKEN}"}, 200)],
)  # fmt: skip
def test_metrics_token_is_required_when_set(metered: Server, headers, status) -> None:
    response = requests.get(f"{metered.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.json()["status"] == 401 and METRICS_TOKEN not in response.text


def test_metrics_off_is_a_404(tmp_path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "i", workers=1,
                    METRICS_ENABLED="0").start()  # fmt: skip
    try:
        assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 404
        server.rpc("create", server.login(), description="still works", expect=201)
    finally:
        server.stop_soon()


def test_stale_files_of_an_earlier_run_are_wiped(new_database_url, tmp_path) -> None:
    """An operator's PROMETHEUS_MULTIPROC_DIR: a restart starts counting from zero."""
    shared = tmp_path / "metrics"
    counts = []
    for _ in range(2):
        server = Server(new_database_url(), tmp_path / "i", workers=1,
                        PROMETHEUS_MULTIPROC_DIR=str(shared)).start()  # fmt: skip
        try:
            server.login()
            samples = scrape_open(server)
            counts.append(samples[_key("incident_rpc_requests_total", {
                "action": "authorization", "dialect": "native", "status": "200"})])  # fmt: skip
        finally:
            server.stop()
    assert counts == [1, 1]


def scrape_open(server: Server) -> dict[str, Any]:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {
        _key(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# -- a real Prometheus -------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(metered: Server, tmp_path_factory) -> Iterator[str]:
    binary = system_tool("prometheus", package="prometheus")
    folder = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "incident_rpc",
            "scrape_interval": "1s",
            "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
            "static_configs": [{"targets": [f"127.0.0.1:{metered.port}"]}],
        }],
    }  # fmt: skip
    (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    command = [
        binary, f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    with open(folder / "log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url, process, folder / "log"), "Prometheus to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(20)


def _ready(url: str, process: subprocess.Popen, log: Path) -> bool:
    if process.poll() is not None:
        pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()[-2000:]}")
    try:
        return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def query(prometheus: str, expression: str) -> dict[str, float]:
    """{labels as sorted k=v: value} of an instant query through Prometheus's HTTP API."""
    answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expression}, timeout=10)
    body = answer.json()
    assert body["status"] == "success", body
    return {
        ",".join(f"{k}={v}" for k, v in sorted(series["metric"].items()) if k != "__name__"):
        float(series["value"][1])
        for series in body["data"]["result"]
    }  # fmt: skip


def test_prometheus_scrapes_the_expected_series(metered: Server, prometheus: str) -> None:
    token = metered.login()
    made = [
        metered.rpc("create", token, description="disk full", severity="high",
                    source="monitoring", expect=201)["data"]["id"]
        for _ in range(3)
    ]  # fmt: skip
    metered.rpc("create", token, description="pump", severity="low", source="operator",
                dedup_key="pump-7", expect=201)  # fmt: skip
    metered.rpc("create", token, description="pump", severity="low", source="operator",
                dedup_key="pump-7", expect=200)  # a repeat: a dedup hit  # fmt: skip
    metered.rpc("acknowledge", token, id=made[0], expect=200)
    metered.rpc("resolve", token, id=made[0], expect=200)
    metered.rpc("update", token, id=made[1], status="completed", expect=200)
    metered.post("/rpc", {"jsonrpc": "2.0", "id": 1, "method": "get", "params": {"id": made[2]}},
                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    metered.post("/incidents/get/", {"id": made[2]}, headers={"Authorization": f"Bearer {token}"})

    expected = {
        "sum by (severity, source) (incident_rpc_incidents_created_total) > 0": {
            "severity=high,source=monitoring": 3, "severity=low,source=operator": 1},
        "sum(incident_rpc_incidents_acknowledged_total)": {"": 1},
        "sum(incident_rpc_incidents_resolved_total)": {"": 2},
        "sum(incident_rpc_time_to_resolve_seconds_count)": {"": 2},
        "sum(incident_rpc_time_to_acknowledge_seconds_count)": {"": 1},
        "sum(incident_rpc_dedup_hits_total)": {"": 1},
        'sum by (severity, status) (incident_rpc_open_incidents{severity="high"})': {
            "severity=high,status=new": 1, "severity=high,status=processing": 0,
            "severity=high,status=unknown": 0},
        'sum by (dialect) (incident_rpc_requests_total{action="get"})': {
            "dialect=jsonrpc": 1, "dialect=legacy": 1},
        'sum(incident_rpc_requests_total{action="create",status="201"})': {"": 4},
        'up{job="incident_rpc"}': {f"instance=127.0.0.1:{metered.port},job=incident_rpc": 1},
    }  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    for expression, values in expected.items():
        while (found := query(prometheus, expression)) != values:
            assert time.monotonic() < deadline, f"{expression}: {found}, not {values}"
            time.sleep(0.5)
    ttr = query(prometheus, "sum(incident_rpc_time_to_resolve_seconds_sum)")[""]
    assert 0 <= ttr < 120  # both resolved within seconds of their creation


# -- the dashboard and the compose profile ------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "incident_rpc.json"
SERIES_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def family_of(series: str) -> str:
    for suffix in SERIES_SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def test_every_dashboard_query_names_a_metric_the_service_exports() -> None:
    exported = exported_names() | {"process_resident_memory_bytes"}
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expression in queries:
        named = set(re.findall(r"\b((?:incident_rpc|process)_[a-z_]+)\b", expression))
        assert named, expression
        assert {family_of(series) for series in named} <= exported, expression


def test_the_dashboard_queries_run_in_prometheus(metered: Server, prometheus: str) -> None:
    wait_for(lambda: query(prometheus, 'up{job="incident_rpc"}'), "a first scrape")
    for expression in dashboard_queries():
        answer = requests.get(f"{prometheus}/api/v1/query", params={"query": expression},
                              timeout=10).json()  # fmt: skip
        assert answer["status"] == "success", (expression, answer)
    assert query(prometheus, "sum by (severity) (incident_rpc_open_incidents)")


def test_compose_adds_prometheus_and_grafana_in_a_profile(tmp_path) -> None:
    compose = system_tool("docker-compose", package="docker-compose")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "POSTGRES_PASSWORD": "p",
           "SECRET_KEY": "s", "ADMIN_PASSWORD": "admin-password"}  # fmt: skip

    done = subprocess.run([compose, "config"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Each service's block of the resolved file, by its two-space-indented name.
    blocks = dict(re.findall(r"^  ([a-z]+):\n((?:    .*\n|      .*\n)*)", done.stdout, re.M))
    profiled = {name for name, block in blocks.items() if "profiles:\n    - monitoring" in block}
    assert {"db", "app", "prometheus", "grafana"} <= set(blocks)
    assert profiled == {"prometheus", "grafana"}  # a plain `up` stays db and app
    for provisioned in ("provisioning/datasources/prometheus.yml",
                        "provisioning/dashboards/incident_rpc.yml"):  # fmt: skip
        assert (DASHBOARD.parent.parent / provisioned).is_file()
