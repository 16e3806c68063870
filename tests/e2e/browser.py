"""Debian's chromium, headless, driven through selenium with Debian's chromium-driver given by
path (so selenium never looks for, or downloads, a driver of its own)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from tests.e2e.helpers import Processes, require_binary, skip_or_fail

CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


@contextmanager
def open_browser(processes: Processes, profile: Path, size: tuple[int, int] = (1366, 800)
                 ) -> Iterator[webdriver.Chrome]:
    """A headless chromium with a fresh profile in `profile`; quit (and its driver's PID
    killed if still there) at the end."""
    chromium = require_binary("chromium")
    if not os.access(CHROMEDRIVER, os.X_OK):
        skip_or_fail(f"{CHROMEDRIVER} is not installed (Debian package chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    processes.adopt(driver.service.process.pid)  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()
