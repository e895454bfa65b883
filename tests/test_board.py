"""The operator board (GET /) in a real Chromium against a real gunicorn: sign-in,
live changes, acting from the board, a stale panel, server strings shown as text,
roles, a dropped socket, a burst of events, the security headers and the layout at
1280 px and at phone width.

With SCREENSHOTS set to a folder, the layout test leaves its screenshots there
(`SCREENSHOTS=docs make test` refreshes those in docs/).
"""

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from chromium import DESKTOP, PHONE, Board, launch, tools, until
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select
from support import ADMIN, QUICK_STOP, Server

STATIC = Path(__file__).resolve().parent.parent / "incident_rpc" / "board" / "static"
# SQLite has no cross-process doorbell: other workers find events by polling the log.
FAST_POLL = {"EVENTS_POLL_INTERVAL": "0.2"}
DRAWN_AT = """window.drawnAt = {};
new MutationObserver(records => { const now = performance.timeOrigin + performance.now();
  for (const record of records) for (const node of record.addedNodes)
    if (node.dataset && !(node.dataset.id in drawnAt)) drawnAt[node.dataset.id] = now;
}).observe(document.getElementById("incidents"), {childList: true});"""


@pytest.fixture(scope="module")
def board_server(new_database_url, tmp_path_factory) -> Iterator[Server]:
    running = Server(new_database_url(), tmp_path_factory.mktemp("board"), **FAST_POLL).start()
    yield running
    running.stop_soon()


@pytest.fixture(scope="module")
def admin_token(board_server: Server) -> str:
    return board_server.login()


@pytest.fixture
def browsers(board_server: Server) -> Iterator[list[Board]]:
    """Open windows (append more with `launch`); all closed after the test."""
    tools()
    opened: list[Board] = [Board(launch(), board_server.url)]
    yield opened
    for board in opened:
        errors = [e for e in board.console_errors() if "favicon" not in e]
        board.driver.quit()
        assert not [e for e in errors if "Content Security Policy" in e], errors


@pytest.fixture
def board(browsers: list[Board]) -> Board:
    return browsers[0]


def create(server: Server, token: str, **fields) -> dict:
    fields.setdefault("description", f"about: {fields.get('title', 'something')}")
    return server.rpc("create", token, expect=201, **fields)["data"]


def user(server: Server, token: str, role: str) -> tuple[str, str]:
    name = f"{role}{time.monotonic_ns() % 10**9}"
    password = f"pw-{name}-secret"
    server.rpc("user_create", token, username=name, password=password, role=role, expect=201)
    return name, password


def test_the_page_and_its_files_carry_the_security_headers(board_server: Server) -> None:
    for path in ("/", "/docs", "/board/js/main.js", "/board/board.css"):
        response = requests.get(board_server.url + path, timeout=10)
        assert response.status_code == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe" not in policy
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert f"ws://127.0.0.1:{board_server.port}" in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert (
        requests.get(board_server.url + "/board/js/main.js", timeout=10)
        .headers["Content-Type"]
        .startswith("text/javascript")
    )


def test_the_pages_have_no_inline_script_and_fit_the_budget() -> None:
    for page in ("index.html", "docs.html"):
        html = (STATIC / page).read_text()
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], page
        assert not re.search(r"\son[a-z]+=", html), page  # no inline event handlers
        assert not re.search(r"https?://", html), page  # nothing from elsewhere
    total = sum(path.stat().st_size for path in STATIC.rglob("*") if path.is_file())
    assert total < 150 * 1024, total
    for script in (STATIC / "js").glob("*.js"):
        assert "innerHTML" not in script.read_text(), script.name
        assert "insertAdjacentHTML" not in script.read_text(), script.name


def test_sign_in_with_a_wrong_password_then_the_right_one(board: Board) -> None:
    board.open().sign_in(ADMIN[0], "not-the-password")
    board.wait(lambda: "Invalid credentials" in board.text("#signin-message"))
    assert "Sign-in failed" in board.text("#signin-message")
    assert not board.find("#board").is_displayed()
    board.sign_in().signed_in()
    assert board.text("#me") == "admin (admin)"
    token = board.driver.execute_script("return sessionStorage.getItem('incident_rpc.token')")
    assert token and not board.driver.get_cookies()


def test_an_incident_created_through_the_api_appears_within_a_second(
    board: Board, board_server: Server, admin_token: str
) -> None:
    board.open().sign_in().signed_in()
    board.driver.execute_script(DRAWN_AT)
    created = create(board_server, admin_token, title="Disk full", severity="critical")
    answered = time.time() * 1000
    board.wait(lambda: board.row(created["id"]))
    # Timed on the page's clock (the machine's wall clock, like the answer's), so that
    # WebDriver's polling adds nothing; bench/board.py measures the distribution.
    drawn = board.driver.execute_script(f"return drawnAt[{created['id']}]")
    assert drawn - answered < 1000, f"drawn {drawn - answered:.0f} ms after the answer"
    row = board.row(created["id"])
    assert "Disk full" in row.text and "critical" in row.text and "new" in row.text
    assert board.row_ids()[0] == created["id"]  # newest first
    assert "fresh" in row.get_attribute("class")  # highlighted briefly


def test_acknowledge_and_resolve_from_the_board(
    board: Board, board_server: Server, admin_token: str
) -> None:
    incident = create(board_server, admin_token, title="Acknowledge me")
    board.open().sign_in().signed_in()
    board.panel(incident["id"])
    board.find("#do-acknowledge").click()
    board.wait(lambda: board.field("acknowledged_by") == "admin")
    seen = board_server.rpc("get", admin_token, id=incident["id"])["data"]
    assert seen["acknowledged_by"] == "admin" and seen["status"] == "processing"
    board.find("#resolution").send_keys("Rebooted the router")
    board.find("#do-resolve").click()
    board.wait(lambda: board.field("status") == "completed")
    seen = board_server.rpc("get", admin_token, id=incident["id"])["data"]
    assert seen["status"] == "completed" and seen["resolution"] == "Rebooted the router"
    history = board_server.rpc("history", admin_token, id=incident["id"])["data"]["events"]
    assert [event["type"] for event in history] == ["added", "acknowledged", "resolved"]
    board.wait(lambda: "resolved" in board.text("#panel .timeline"))
    board.wait(lambda: "completed" in board.row(incident["id"]).text)


def test_comment_and_assign_from_the_board(
    board: Board, board_server: Server, admin_token: str
) -> None:
    agent, _ = user(board_server, admin_token, "agent")
    incident = create(board_server, admin_token, title="Comment on me")
    board.open().sign_in().signed_in()
    board.panel(incident["id"])
    board.find("#comment-text").send_keys("Looking into it\nsecond line")
    board.find(".comment-form button").click()
    board.wait(lambda: "Looking into it" in board.text("#panel .comments"))
    board.find("#assignee-input").send_keys(agent)
    board.find("#do-assign").click()
    board.wait(lambda: board.field("assignee") == agent)
    comments = board_server.rpc("comments", admin_token, id=incident["id"])["data"]["comments"]
    assert [c["text"] for c in comments] == ["Looking into it\nsecond line"]
    assert board_server.rpc("get", admin_token, id=incident["id"])["data"]["assignee"] == agent


def test_a_second_browser_sees_the_first_ones_change_live(
    browsers: list[Board], board_server: Server, admin_token: str
) -> None:
    incident = create(board_server, admin_token, title="Seen twice")
    first = browsers[0]
    second = Board(launch(), board_server.url)
    browsers.append(second)
    for board in (first, second):
        board.open().sign_in().signed_in()
        board.wait(lambda board=board: board.row(incident["id"]))
    first.panel(incident["id"])
    Select(first.find("#status-select")).select_by_value("fake")
    first.find("#do-status").click()
    second.wait(lambda: "fake" in second.row(incident["id"]).text, timeout=2)
    assert "fresh" in second.row(incident["id"]).get_attribute("class")


def test_a_stale_panel_is_told_and_reloaded_instead_of_overwriting(
    board: Board, board_server: Server, admin_token: str
) -> None:
    incident = create(board_server, admin_token, title="Before")
    board.open().sign_in().signed_in()
    board.panel(incident["id"])
    Select(board.find("#status-select")).select_by_value("fake")  # begun, not sent
    board_server.rpc("update", admin_token, id=incident["id"], title="After", expect=200)
    board.wait(lambda: "Changed meanwhile by admin" in board.text("#panel-message"))
    board.find("#do-status").click()
    board.wait(lambda: "Changed by someone else" in board.text("#panel-message"))
    assert board.field("title") == "After" and board.field("status") == "new"
    seen = board_server.rpc("get", admin_token, id=incident["id"])["data"]
    assert seen["status"] == "new" and seen["version"] == 2


def test_server_strings_are_shown_as_text_and_run_nothing(
    board: Board, board_server: Server, admin_token: str
) -> None:
    attack = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    incident = board_server.rpc(
        "create", admin_token, title=attack, description=attack, details={"x": attack}
    )["data"]
    board_server.rpc("comment", admin_token, id=incident["id"], text=attack, expect=201)
    board.open().sign_in().signed_in()
    board.wait(lambda: board.row(incident["id"]))
    board.panel(incident["id"])
    board.wait(lambda: attack in board.text("#panel .comments"))
    assert attack in board.row(incident["id"]).text
    assert board.field("description") == attack
    assert board.all("#incidents img, #panel img, #panel script") == []
    assert board.driver.execute_script("return window.pwned === undefined")


def test_a_reporter_sees_only_its_own_incidents_and_no_admin_pages(
    board: Board, board_server: Server, admin_token: str
) -> None:
    name, password = user(board_server, admin_token, "reporter")
    others = create(board_server, admin_token, title="Not the reporter's")
    reporter_token = board_server.login(name, password)
    own = create(board_server, reporter_token, title="The reporter's own")
    board.open().sign_in(name, password).signed_in()
    board.wait(lambda: board.row(own["id"]))
    assert board.row(others["id"]) is None
    assert not board.find("#nav-admin").is_displayed()
    board.panel(own["id"])
    assert board.all("#do-acknowledge, #do-resolve, #do-status, #do-assign") == []
    assert board.all("#comment-text")  # a reporter may comment on its own
    board.open("/#/admin")
    board.signed_in()
    assert not board.find("#admin").is_displayed()
    later = create(board_server, admin_token, title="Still not the reporter's")
    mine = create(board_server, reporter_token, title="Also mine")
    board.wait(lambda: board.row(mine["id"]))
    assert board.row(later["id"]) is None


def test_an_ended_session_returns_to_sign_in_with_a_clear_message(
    board: Board, board_server: Server, admin_token: str
) -> None:
    name, password = user(board_server, admin_token, "agent")
    board.open().sign_in(name, password).signed_in()
    board_server.rpc("logout", board_server.login(name, password), expect=200)  # every token
    Select(board.find("#filter-status")).select_by_value("new")  # the next command: 401
    board.wait(lambda: board.find("#signin").is_displayed())
    assert "Your session has ended" in board.text("#signin-message")
    assert "Sign in again" in board.text("#signin-message")
    token = board.driver.execute_script("return sessionStorage.getItem('incident_rpc.token')")
    assert token is None


def test_sign_out_calls_logout(board: Board, board_server: Server, admin_token: str) -> None:
    name, password = user(board_server, admin_token, "agent")  # logout ends all its tokens
    board.open().sign_in(name, password).signed_in()
    token = board.driver.execute_script("return sessionStorage.getItem('incident_rpc.token')")
    board.find("#signout").click()
    board.wait(lambda: board.text("#signin-message") == "Signed out.")
    board_server.rpc("whoami", token, expect=401)


def test_the_create_form_and_the_keyboard(board: Board, board_server: Server, admin_token) -> None:
    board.open().sign_in().signed_in()
    board.find("#nav-new").click()
    board.wait(lambda: board.find("#create").is_displayed())
    form = board.find('#create form[data-action="create"]')
    form.find_element(By.NAME, "title").send_keys("Typed on the board")
    form.find_element(By.NAME, "description").send_keys("Made from the create form")
    Select(form.find_element(By.NAME, "severity")).select_by_value("high")
    form.find_element(By.NAME, "details").send_keys('{"rack": 7}')
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    board.wait(lambda: board.text("#panel-title").endswith("Typed on the board"))
    incident_id = int(board.text("#panel-title").split()[0].lstrip("#"))
    seen = board_server.rpc("get", admin_token, id=incident_id)["data"]
    assert seen["severity"] == "high" and seen["details"] == {"rack": 7}
    board.find("#panel").send_keys(Keys.ESCAPE)  # Escape closes the panel
    board.wait(lambda: not board.find("#panel").is_displayed())
    # The row comes with the live `added` event, which may follow the create's answer.
    link = board.wait(lambda: board.row(incident_id)).find_element(By.CSS_SELECTOR, "a")
    link.send_keys(Keys.ENTER)  # a row is a link: Tab to it, Enter opens it
    board.wait(lambda: board.text("#panel-title").startswith(f"#{incident_id}"))


def test_admin_creates_a_key_shown_once_and_revokes_it(board: Board, board_server: Server):
    board.open().sign_in().signed_in()
    board.open("/#/admin")
    board.wait(lambda: board.all('#keys form[data-action="key_create"]'))
    form = board.find('#keys form[data-action="key_create"]')
    name = f"board{time.monotonic_ns() % 10**6}"
    form.find_element(By.NAME, "name").send_keys(name)
    Select(form.find_element(By.NAME, "role")).select_by_value("reporter")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    board.wait(lambda: board.all("#new-key"))
    key = board.find("#new-key").get_attribute("value")
    assert key.startswith("irk_")
    board_server.rpc("whoami", key, expect=200)
    board.wait(lambda: any(name in row.text for row in board.all("#keys tbody tr")))
    row = next(row for row in board.all("#keys tbody tr") if name in row.text)
    assert key not in board.find("#keys table").text  # the table shows the prefix only
    row.find_element(By.CSS_SELECTOR, "button").click()
    board.driver.switch_to.alert.accept()
    until(lambda: board_server.rpc("whoami", key)["status"] == 401)
    board_server.rpc("whoami", key, expect=401)


def test_admin_changes_a_users_role(board: Board, board_server: Server, admin_token: str):
    name, _ = user(board_server, admin_token, "reporter")
    board.open().sign_in().signed_in()
    board.open("/#/admin")
    board.wait(lambda: board.all(f'#users tr[data-username="{name}"]'))
    row = board.find(f'#users tr[data-username="{name}"]')
    Select(row.find_element(By.CSS_SELECTOR, "select")).select_by_value("agent")

    def role() -> str:
        users = board_server.rpc("user_list", admin_token)["data"]["users"]
        return next(u["role"] for u in users if u["username"] == name)

    assert until(lambda: role() == "agent")


def test_admin_silences_from_forms_built_from_the_silence_actions(
    browsers: list[Board], board_server: Server, admin_token: str
) -> None:
    watcher = browsers[0]
    watcher.open().sign_in().signed_in()
    rows = watcher.row_ids()
    admin = Board(launch(), board_server.url)
    browsers.append(admin)
    admin.open().sign_in().signed_in()
    admin.open("/#/admin")
    admin.wait(lambda: admin.all('#silences form[data-action="silence_create"]'))
    form = admin.find('#silences form[data-action="silence_create"]')
    form.find_element(By.NAME, "matchers").send_keys('{"source": "partner", "text": "board"}')
    form.find_element(By.NAME, "duration").send_keys("3600")
    form.find_element(By.NAME, "comment").send_keys("<b>planned</b> work")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    admin.wait(lambda: "<b>planned</b> work" in admin.text("#silences table"))
    silences = board_server.rpc("silence_list", admin_token)["data"]["silences"]
    made = next(s for s in silences if s["comment"] == "<b>planned</b> work")
    assert made["state"] == "active" and made["matchers"]["source"] == "partner"

    def expire() -> bool:  # the table is redrawn by the answer and by the live event
        row = next(r for r in admin.all("#silences tbody tr") if "<b>planned</b>" in r.text)
        row.find_element(By.XPATH, ".//button[text()='expire']").click()
        return True

    admin.wait(expire)  # a click on a row gone stale is tried again on the new one
    assert until(
        lambda: next(
            s for s in board_server.rpc("silence_list", admin_token)["data"]["silences"]
            if s["id"] == made["id"]
        )["state"] == "expired"
    )  # fmt: skip
    admin.wait(lambda: "expired" in admin.text("#silences table"))
    # The silence's events reached the board's socket too, and drew no incident rows.
    incident = create(board_server, admin_token, title="after the silence")
    watcher.wait(lambda: watcher.row(incident["id"]))
    assert watcher.row_ids() == [incident["id"], *rows]
    assert watcher.all("#filter-silenced")  # get_all's new filter, found in describe


def test_the_text_filter_narrows_the_list(board: Board, board_server: Server, admin_token) -> None:
    """Built from get_all's `text` parameter in describe, like every other filter."""
    mark = f"needle{board_server.port}"
    found = create(board_server, admin_token, title=f"Disk full ({mark.upper()})")
    other = create(board_server, admin_token, title="Something else")
    board.open().sign_in().signed_in()
    board.wait(lambda: board.row(other["id"]))
    assert "No free-text search" not in board.text("#filters")
    board.find("#filter-text").send_keys(mark)
    board.wait(lambda: board.row(other["id"]) is None and board.row(found["id"]))


def test_the_header_shows_the_numbers_of_stats(
    board: Board, board_server: Server, admin_token: str
) -> None:
    board.open().sign_in().signed_in()
    board.wait(lambda: board.find("#stats").is_displayed())
    incident = create(board_server, admin_token, title="Counted", severity="critical")
    board_server.rpc("acknowledge", admin_token, id=incident["id"], expect=200)
    numbers = board_server.rpc("stats", admin_token, expect=200)["data"]["open"]

    def figure(label: str) -> str:
        return board.text(f'#stats [data-figure="{label}"] b')

    # Refreshed after live changes (at most every 2 s): the numbers catch up.
    board.wait(lambda: figure("open") == str(numbers["total"]))
    assert figure("unacknowledged") == str(numbers["unacknowledged"])
    assert figure("critical") == str(numbers["by_severity"]["critical"])
    assert figure("MTTA today") not in ("", "–")  # one acknowledgement today at least
    assert "MTTR today" in board.text("#stats")


def test_a_dropped_socket_reconnects_and_misses_nothing(
    board: Board, new_database_url, tmp_path_factory
) -> None:
    folder = tmp_path_factory.mktemp("restart")
    server = Server(new_database_url(), folder, **FAST_POLL, **QUICK_STOP).start()
    try:
        token = server.login()
        board.url = server.url
        board.open().sign_in().signed_in()
        before = create(server, token, title="before the restart")["id"]
        board.wait(lambda: board.row(before))
        server.stop()
        board.wait(lambda: board.text("#live") == "reconnecting")
        server.start()
        token = server.login()
        made = [create(server, token, title=f"after {n}")["id"] for n in range(5)]
        board.wait(lambda: board.text("#live") == "live", timeout=15)
        board.wait(lambda: all(board.row(i) for i in made))
        ids = board.row_ids()
        assert len(ids) == len(set(ids)) == 6
        assert ids == sorted(ids, reverse=True)
    finally:
        server.stop_soon()


def test_a_burst_of_a_thousand_events_renders_in_batches(
    board: Board, board_server: Server, admin_token: str
) -> None:
    board.open().sign_in().signed_in()
    board.driver.execute_script(
        """window.longest = 0;
        new PerformanceObserver(list => { for (const task of list.getEntries())
          window.longest = Math.max(window.longest, task.duration); })
          .observe({type: 'longtask'});"""
    )
    shown = len(board.row_ids())
    made: list[int] = []
    halfway = 0
    started = time.monotonic()
    for second in range(10):  # 1,000 creates over ten seconds, in batches of 50
        if second == 5:
            halfway = len(board.row_ids()) - shown
        for _ in range(2):
            batch = [{"action": "create", "token": admin_token, "description": "burst"}] * 50
            answers = board_server.post("/rpc", batch).json()
            made += [answer["data"]["id"] for answer in answers]
        time.sleep(max(0.0, started + second + 1 - time.monotonic()))
    assert len(made) == 1000
    board.wait(lambda: len(board.row_ids()) >= shown + 1000, timeout=15)
    assert set(made) <= set(board.row_ids())
    assert halfway > 0  # drawn as they came, not at the end
    # A frozen page misses frames for a second or more; a long task is any over 50 ms,
    # and on a busy 2-core machine a batch of a hundred rows may take a few of those.
    longest = board.driver.execute_script("return window.longest")
    assert longest < 1000, f"the page was blocked for {longest} ms"


def test_the_layout_at_1280_px_and_at_phone_width(
    board: Board, board_server: Server, admin_token: str, tmp_path: Path
) -> None:
    folder = Path(os.environ.get("SCREENSHOTS") or tmp_path)
    for severity in ("low", "medium", "high", "critical"):
        title = f"Payment API {severity} latency"
        create(board_server, admin_token, title=title, severity=severity, source="monitoring")
    incident = create(
        board_server, admin_token, title="Scooter 875643 offline", severity="high",
        description="No heartbeat for 10 minutes", source="partner",
    )  # fmt: skip
    board_server.rpc("comment", admin_token, id=incident["id"], text="Calling the partner")
    board_server.rpc("acknowledge", admin_token, id=incident["id"])
    board.open().sign_in().signed_in()
    board.panel(incident["id"])
    board.wait(lambda: "acknowledged" in board.text("#panel .timeline"))
    board.driver.save_screenshot(str(folder / "board-1280.png"))
    for width, height in (PHONE, DESKTOP):
        board.driver.set_window_size(width, height)
        board.wait(lambda width=width: board.driver.execute_script("return innerWidth") <= width)
        overflow = "return document.documentElement.scrollWidth - innerWidth"
        assert board.driver.execute_script(overflow) <= 0, f"wider than {width} px"
        if width == PHONE[0]:
            board.driver.save_screenshot(str(folder / "board-phone-panel.png"))
            board.find("#panel .close").click()
            board.wait(lambda: not board.find("#panel").is_displayed())
            board.driver.save_screenshot(str(folder / "board-phone.png"))
            board.panel(incident["id"])
