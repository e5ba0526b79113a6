"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium, for the HTML reports.

``open_page(driver, path)`` loads a file and returns what a reader would see: the console's
error lines, each plotly figure's number of drawn points, each image's size, and a
screenshot's share of non-background pixels.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--window-size=1280,1600")
PAGE_TIMEOUT_S = 60


@dataclass
class Page:
    console_errors: list[str]
    figure_points: list[int]  # per plotly figure: points drawn (0 = an empty figure)
    images: list[tuple[int, int]]  # natural width, height of each <img>
    ink: float  # fraction of screenshot pixels that differ from the page background
    render_s: float  # load until every figure has drawn


def chromium_driver() -> Iterator[Any]:
    """A fresh headless Chromium with its own profile folder; quit (and the folder removed) afterwards."""
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: .ci/run installs them (apt-get, as root)")
        pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="soak-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    driver.set_script_timeout(PAGE_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


POINTS_JS = """
const figs = Array.from(document.querySelectorAll('.js-plotly-plot'));
return figs.map(f => (f._fullData || []).reduce((n, t) => n + ((t.x && t.x.length) || (t.y && t.y.length) || 0), 0));
"""


def _ink(png: bytes) -> float:
    import numpy as np
    from PIL import Image

    px = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize((320, 400)), dtype=int).reshape(-1, 3)
    colors, counts = np.unique(px, axis=0, return_counts=True)
    background = colors[counts.argmax()]
    return float((np.abs(px - background).sum(axis=1) > 30).mean())


def open_page(driver: Any, path: Path, *, expect_figures: int = 0) -> Page:
    """Load ``path`` and wait until ``expect_figures`` plotly figures (at least) have drawn."""
    driver.get_log("browser")  # drop what an earlier page logged
    t0 = time.monotonic()
    driver.get(path.resolve().as_uri())
    deadline = t0 + PAGE_TIMEOUT_S
    points: list[int] = []
    while time.monotonic() < deadline:
        ready = driver.execute_script("return document.readyState") == "complete"
        points = driver.execute_script(POINTS_JS) if ready else []
        if ready and len(points) >= expect_figures and all(points):
            break
        time.sleep(0.02)
    render_s = time.monotonic() - t0
    images = driver.execute_script("return Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight]);")
    errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return Page(errors, points, [tuple(i) for i in images], _ink(driver.get_screenshot_as_png()), render_s)
