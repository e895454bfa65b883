"""Headless Chromium for the board's tests, driven by Selenium through Debian's
chromedriver (never one downloaded by Selenium Manager), and a small page helper.

Missing `chromium` or `chromedriver` skips the test with the package to install
(support.py's `system_tool`; under CI it fails instead).
"""

import time
from collections.abc import Callable
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from support import ADMIN, system_tool

PHONE = (390, 844)
DESKTOP = (1280, 900)


def tools() -> tuple[str, str]:
    browser = system_tool("chromium", "chromium-browser", package="chromium")
    driver = system_tool("chromedriver", package="chromium-driver")
    return browser, driver


def launch(size: tuple[int, int] = DESKTOP) -> webdriver.Chrome:
    browser, driver = tools()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--no-first-run", "--disable-background-networking", "--disable-sync",
        "--disable-component-update", "--disable-default-apps", "--metrics-recording-only",
        f"--window-size={size[0]},{size[1]}",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


class Board:
    """The board in one browser window, in the words a user would use."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver, self.url = driver, url

    def wait(self, condition: Callable[[], Any], timeout: float = 10, poll: float = 0.05) -> Any:
        def check(_driver: Any) -> Any:
            try:
                return condition()
            except StaleElementReferenceException:  # redrawn meanwhile: look again
                return False

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=poll).until(check)
        except TimeoutException as error:  # say what the page looked like
            raise AssertionError(f"timed out after {timeout} s; {self.state()}") from error

    def state(self) -> str:
        script = """return [document.getElementById('live').textContent,
            document.querySelectorAll('#incidents li').length,
            document.getElementById('list-note').textContent,
            document.getElementById('signin').hidden]"""
        live, rows, note, signin_hidden = self.driver.execute_script(script)
        errors = self.console_errors()[-3:]
        shown = "shown" if not signin_hidden else "hidden"
        return f"socket {live!r}, {rows} rows, note {note!r}, sign-in {shown}, errors {errors}"

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        found = self.all(css)
        return found[0].text if found else ""

    def open(self, path: str = "/") -> "Board":
        self.driver.get(self.url + path)
        return self

    def sign_in(self, username: str = ADMIN[0], password: str = ADMIN[1]) -> "Board":
        self.wait(lambda: self.find("#signin").is_displayed())
        form = self.find("#signin-form")
        for name, value in (("username", username), ("password", password)):
            form.find_element(By.NAME, name).clear()
            form.find_element(By.NAME, name).send_keys(value)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        return self

    def signed_in(self) -> "Board":
        """Signed in with the list loaded and the socket live."""
        self.wait(lambda: self.find("#board").is_displayed() and self.text("#live") == "live")
        self.wait(lambda: self.text("#list-end") or self.all("#incidents li"))
        return self

    def row(self, incident_id: int) -> WebElement | None:
        found = self.all(f'#incidents li[data-id="{incident_id}"]')
        return found[0] if found else None

    def row_ids(self) -> list[int]:
        script = "return [...document.querySelectorAll('#incidents li')].map(li => +li.dataset.id)"
        return self.driver.execute_script(script)

    def panel(self, incident_id: int) -> WebElement:
        self.driver.execute_script(f"location.hash = '#/incident/{incident_id}'")
        self.wait(lambda: self.text("#panel-title").startswith(f"#{incident_id}"))
        return self.find("#panel")

    def field(self, name: str) -> str:
        return self.text(f'#panel .pair[data-field="{name}"] dd')

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]


def until(condition: Callable[[], Any], timeout: float = 10) -> Any:
    """Poll a condition outside the browser (e.g. through the API)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)
