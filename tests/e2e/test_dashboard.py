"""The dashboard in a real browser (headless chromium) against `sentinel run` over real backend
processes: the token prompt, live updates without a reload, admin buttons, a refused token.
A screenshot of every step is saved under the test's tmp_path/screens."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.browser import open_browser
from tests.e2e.helpers import Processes, start_backend, wait_until
from tests.e2e.site import Site, start_backends, states

pytestmark = pytest.mark.e2e
# Every wait on the page is a safety net, generous for a loaded machine: a row or badge
# changes only through /v1/stream (the page never polls, and the first test shows it never
# reloaded), so a long bound lets nothing else pass. How fast the page follows an event is
# measured in bench/, not here.
PATIENCE = 30


def shot(driver: webdriver.Chrome, folder: Path, name: str) -> None:
    """Save a screenshot of the page as it is now."""
    folder.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(folder / f"{name}.png"))


def row(driver: webdriver.Chrome, backend: str) -> tuple[str, str]:
    """(state word, reason) of a backend's row; ("", "") while it is not shown. Read in one
    script call: a row the page patches between two WebDriver calls would go stale."""
    found = driver.execute_script(
        "const r = document.querySelector(`.row.be[data-backend='${arguments[0]}']`);"
        "return r ? [r.querySelector('.state').innerText,"
        " r.querySelector('.c-reason').innerText] : ['', ''];", backend)
    return str(found[0]), str(found[1])


def give_token(driver: webdriver.Chrome, token: str) -> None:
    """Type `token` into the token dialog (once it is open) and submit it."""
    WebDriverWait(driver, PATIENCE).until(
        lambda d: d.find_element(By.ID, "token-dialog").get_attribute("open") is not None)
    field = driver.find_element(By.ID, "token-input")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "token-ok").click()


def press(driver: webdriver.Chrome, label: str) -> None:
    """Click the row button labelled `label`, found once and clicked after the row has
    been redrawn by a probe result: the page keeps a row's buttons across its updates, so
    a click that lands during a redraw still reaches its button (never stale)."""
    button = driver.find_element(By.CSS_SELECTOR, f'[aria-label="{label}"]')
    lat = "return arguments[0].closest('.row').querySelector('.c-lat').innerHTML"
    before = driver.execute_script(lat, button)
    WebDriverWait(driver, PATIENCE).until(lambda d: d.execute_script(lat, button) != before)
    button.click()


def notice(driver: webdriver.Chrome) -> str:
    """The page's message line (the API's answers)."""
    return str(driver.find_element(By.ID, "notice").text)


def test_the_dashboard_follows_a_failover_live_and_drains_with_the_token(
        processes: Processes, site: Site, tmp_path: Path) -> None:
    """A wrong token is shown as the API's 401 and asked again; with the right one every
    backend shows up; a killed backend's row turns down with the event's reason, without a
    reload, and comes back up after a restart; drain through the page publishes; an action
    with a wrong token shows the 401 and changes nothing."""
    backends = start_backends(processes, site, "web1", "web2", "api1")
    site.write({"web": ["web1", "web2"], "api": ["api1"]})
    _, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up", "web2": "up"}, what="all up")
    screens = tmp_path / "screens"
    with open_browser(processes, tmp_path / "profile") as driver:
        driver.get(api.url + "/")
        give_token(driver, "not-the-token")
        WebDriverWait(driver, PATIENCE).until(lambda d: "401" in notice(d))
        assert "missing or wrong bearer token" in notice(driver)
        shot(driver, screens, "1-wrong-token")
        give_token(driver, site.token)
        WebDriverWait(driver, PATIENCE).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-live") == "live")
        WebDriverWait(driver, PATIENCE).until(
            lambda d: [row(d, b)[0] for b in ("web1", "web2", "api1")] == ["up"] * 3)
        driver.execute_script("window.sentinelTestMark = 1")  # gone if the page reloads
        shot(driver, screens, "2-all-up")

        processes.kill(backends["web2"])
        down = wait_until(lambda: [e for e in api.events() if e["backend"] == "web2"
                                   and e["to"] == "down"], timeout=30,
                   what="web2 published down")[0]
        WebDriverWait(driver, PATIENCE).until(lambda d: row(d, "web2") == ("down", down["reason"]))
        assert "connection refused" in down["reason"]
        shot(driver, screens, "3-web2-down")

        start_backend(processes, site.ports["web2"], "web2")
        wait_until(lambda: api.backend("web", "web2")["state"] == "up", timeout=30,
                   what="web2 up again")
        WebDriverWait(driver, PATIENCE).until(lambda d: row(d, "web2")[0] == "up")
        shot(driver, screens, "4-web2-up-again")

        press(driver, "drain web/web1")
        WebDriverWait(driver, PATIENCE).until(lambda d: "web/web1: drain (up → drain)" in notice(d))
        WebDriverWait(driver, PATIENCE).until(lambda d: row(d, "web1") == ("drain", "admin: drain"))
        assert api.backend("web", "web1")["override"] == "drain"
        shot(driver, screens, "5-web1-drained")

        driver.find_element(By.ID, "token-button").click()
        give_token(driver, "wrong-again")
        press(driver, "ready web/web1")
        WebDriverWait(driver, PATIENCE).until(lambda d: "refused: 401" in notice(d))
        assert notice(driver) == "web/web1: ready refused: 401 missing or wrong bearer token"
        assert api.backend("web", "web1")["override"] == "drain"
        shot(driver, screens, "6-ready-refused-401")
        assert driver.execute_script("return window.sentinelTestMark") == 1


def test_the_page_is_served_from_the_package_with_a_strict_policy(
        processes: Processes, site: Site) -> None:
    """GET / and its two files answer with a CSP that allows no inline script or style and
    no other origin; nothing else under /dashboard/ is served."""
    start_backends(processes, site, "web1")
    site.write({"web": ["web1"]})
    _, api = site.start(processes)
    page = httpx.get(api.url + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy
    assert "style-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script src=\"/dashboard/app.js\"" in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        served = httpx.get(f"{api.url}/dashboard/{name}", timeout=5)
        assert served.status_code == 200
        assert served.headers["content-type"].startswith(kind)
    for path in ("/dashboard/../api.py", "/dashboard/", "/dashboard/nope.js", "/index.html"):
        assert httpx.get(api.url + path, timeout=5).status_code == 404, path


def badges(driver: webdriver.Chrome, service: str) -> list[str]:
    """The badge words of a service's header row, read in one script call."""
    found = driver.execute_script(
        "const r = document.querySelector(`.row.svc[data-service='${arguments[0]}']`);"
        "return r ? [...r.querySelectorAll('.badge')].map(b => b.innerText) : [];", service)
    return [str(word) for word in found]


def test_the_panic_badge_follows_the_guard(
        processes: Processes, site: Site, tmp_path: Path) -> None:
    """With `min_up: 2` of two backends, a killed backend puts the service in panic: its
    header shows PANIC (beside the word, never colour alone) while the guard holds, and
    the badge goes once the backend is back."""
    backends = start_backends(processes, site, "web1", "web2")
    site.write({"web": ["web1", "web2"]}, min_up="2")
    _, api = site.start(processes)
    wait_until(lambda: states(api, "web") == {"web1": "up", "web2": "up"}, what="all up")
    with open_browser(processes, tmp_path / "profile") as driver:
        driver.get(api.url + "/")
        give_token(driver, site.token)
        WebDriverWait(driver, PATIENCE).until(lambda d: badges(d, "web") == [])
        processes.kill(backends["web2"])
        wait_until(lambda: [e for e in api.events() if e["to"] == "panic"],
                   what="web in panic")
        WebDriverWait(driver, PATIENCE).until(lambda d: "PANIC" in badges(d, "web"))
        shot(driver, tmp_path / "screens", "panic")
        start_backend(processes, site.ports["web2"], "web2")
        wait_until(lambda: [e for e in api.events() if e["from"] == "panic"],
                   what="web out of panic")
        WebDriverWait(driver, PATIENCE).until(lambda d: "PANIC" not in badges(d, "web"))
