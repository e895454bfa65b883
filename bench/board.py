"""The board in Chromium: first screen, command-to-drawn latency, a burst of 1,000.

    python bench/board.py [--rows 1000000] [--rounds 100]

One gunicorn (production gunicorn.conf.py) on a throwaway PostgreSQL database
seeded with `--rows` incidents (bench/run.py's SEED), one headless Chromium
(Debian's chromium and chromedriver) signed in on the board. Figures:

- first screen: from navigation to the first page of incidents drawn, read from the
  page's own Performance API (the board marks `board:first-page`), median of 5
  reloads. Target: under 1 s with 1,000,000 incidents.
- latency: `--rounds` creates, one at a time; for each, the moment its row is drawn
  (a MutationObserver, then the next animation frame: after the paint) minus the
  moment the command's HTTP answer arrived (both on this machine's wall clock).
  Baseline in the same run and the same page: a bare WebSocket on /ws that only
  records when each event arrives. Target: p99 under 250 ms; the ratio shows what
  drawing adds to delivery.
- burst: 1,000 creates in ten seconds (batches of 50); when the last row is drawn
  after the last answer, and the longest task that blocked the page.
- the page's own files: their bytes (target: under 150 KiB).
"""

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

from harness import ADMIN, DEFAULT_ADMIN_URL, ROOT, Database, Gunicorn, instance_dir
from run import SEED
from selenium import webdriver

STATIC = ROOT / "incident_rpc" / "board" / "static"
WATCH = """
window.drawn = {}; window.arrived = {};
new MutationObserver(records => {
  const now = performance.timeOrigin + performance.now();
  const ids = records.flatMap(r => [...r.addedNodes]).map(n => n.dataset && n.dataset.id);
  requestAnimationFrame(() => { const painted = performance.timeOrigin + performance.now();
    for (const id of ids) if (id && !(id in drawn)) drawn[id] = painted; });
}).observe(document.getElementById('incidents'), {childList: true});
const bare = new WebSocket(`ws://${location.host}/ws`);
const token = sessionStorage.getItem('incident_rpc.token');
bare.onopen = () => bare.send(JSON.stringify({token}));
bare.onmessage = m => { const e = JSON.parse(m.data);
  if (e.type === 'added') arrived[e.data.id] = performance.timeOrigin + performance.now(); };
window.longest = 0;
new PerformanceObserver(list => {
  for (const task of list.getEntries()) longest = Math.max(longest, task.duration);
}).observe({type: 'longtask'});
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--disable-background-networking"):  # fmt: skip
        options.add_argument(argument)
    service = webdriver.ChromeService(shutil.which("chromedriver") or "chromedriver")
    return webdriver.Chrome(options=options, service=service)


def wait(driver: webdriver.Chrome, script: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(script)


def first_screen(driver: webdriver.Chrome, url: str) -> float:
    times = []
    for _ in range(5):
        driver.get(url + "/")
        mark = "return performance.getEntriesByName('board:first-page')[0]?.startTime"
        times.append(float(wait(driver, mark)))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument(
        "--admin-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_ADMIN_URL)
    )
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "board.json"))
    args = parser.parse_args()
    database = Database(args.admin_url).create()
    server = Gunicorn("wsgi:app", {
        "DATABASE_URL": database.sqlalchemy_url, "INCIDENT_RPC_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(32), "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1], "INSTANCE_PATH": instance_dir(), "LOG_LEVEL": "WARNING",
    }, "/readyz")  # fmt: skip
    driver = None
    try:
        server.start()
        connection = database.connect()
        with connection, connection.cursor() as cursor:
            cursor.execute(SEED, {"rows": args.rows})
            cursor.execute("ANALYZE incidents")
        connection.close()
        login = {"action": "authorization", "username": ADMIN[0], "password": ADMIN[1]}
        token = server.post("/rpc", login)["data"]["token"]
        driver = browser()
        driver.get(server.url + "/")
        driver.execute_script("sessionStorage.setItem('incident_rpc.token', arguments[0])", token)
        first = first_screen(driver, server.url)
        wait(driver, "return document.getElementById('live').textContent === 'live'")
        driver.execute_script(WATCH)
        wait(driver, "return true")
        time.sleep(0.5)  # the bare socket's handshake
        answered: dict[str, float] = {}
        for n in range(args.rounds):
            made = server.post("/rpc", {"action": "create", "token": token, "description": f"r{n}"})
            answered[str(made["data"]["id"])] = time.time() * 1000
            wait(driver, f"return '{made['data']['id']}' in drawn")
        drawn = driver.execute_script("return drawn")
        arrived = driver.execute_script("return arrived")
        board = [drawn[i] - answered[i] for i in answered]
        bare = [arrived[i] - answered[i] for i in answered if i in arrived]
        driver.execute_script("window.longest = 0")
        last_answer, ids = 0.0, []
        started = time.monotonic()
        for second in range(10):
            for _ in range(2):
                batch = [{"action": "create", "token": token, "description": "burst"}] * 50
                ids += [a["data"]["id"] for a in server.post("/rpc", batch)]
                last_answer = time.time() * 1000
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
        wait(driver, f"return '{ids[-1]}' in drawn && {len(ids)} <= Object.keys(drawn).length")
        burst_lag = driver.execute_script(f"return drawn['{ids[-1]}']") - last_answer
        longest = driver.execute_script("return longest")
        files = sum(p.stat().st_size for p in STATIC.rglob("*") if p.is_file())
        result = {
            "rows": args.rows, "first_screen_ms": round(first, 1),
            "drawn_p50_ms": round(percentile(board, 0.5), 1),
            "drawn_p99_ms": round(percentile(board, 0.99), 1),
            "bare_p50_ms": round(percentile(bare, 0.5), 1),
            "bare_p99_ms": round(percentile(bare, 0.99), 1),
            "p99_ratio": round(percentile(board, 0.99) / max(percentile(bare, 0.99), 0.1), 2),
            "burst_last_drawn_after_last_answer_ms": round(burst_lag, 1),
            "burst_longest_task_ms": longest, "static_bytes": files,
        }  # fmt: skip
        print(json.dumps(result, indent=2))
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if driver:
            driver.quit()
        server.stop()
        database.drop()


if __name__ == "__main__":
    sys.exit(main())
