"""The self-contained HTML signoff: ``make demo``, ``soak report`` of a soak, opened in headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soaklib.errors import ParameterError
from soaklib.report.html import export_html, report
from tests.browser import chromium_driver, open_page
from tests.conftest import REPO
from tests.test_soak_a import soak

FAST_SIM = {"DX_SIM_TICK_S": "0.2", "DX_SIM_LATENCY_SCALE": "0.3", "DX_SIM_PREFLIGHT_S": "0.01"}
REMOTE = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(https?://[^\"]+)")  # what a page would load


@pytest.fixture
def driver() -> Iterator[Any]:
    """A browser per test: its renderer processes are stopped with it (no process outlives a test)."""
    yield from chromium_driver()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("demo")
    p = subprocess.run(["make", "--no-print-directory", "demo", f"OUT={out}", "RUN_ID=demo-html"], cwd=REPO,
                       capture_output=True, text=True, timeout=240, env={**os.environ, **FAST_SIM})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout, out


def assert_self_contained(html: str) -> None:
    assert not REMOTE.findall(html), REMOTE.findall(html)
    assert "from soaklib" not in html  # code inputs are hidden in the report view


def test_make_demo_prints_every_artifact_and_its_html_renders(demo: tuple[str, Path], driver: Any) -> None:
    stdout, out = demo
    for line in (f"Signoff: {out}/demo-html.json and {out}/demo-html.md", f"Executed notebook: {out}/demo-html.ipynb",
                 f"HTML: {out}/demo-html.html"):
        assert line in stdout, stdout
    html_path = out / "demo-html.html"
    html = html_path.read_text()
    assert_self_contained(html)
    assert "Multi-provider soak validation" in html and "data:image/png;base64," in html
    page = open_page(driver, html_path)
    assert page.console_errors == []
    assert page.images and all(w > 200 and h > 100 for w, h in page.images)  # the latency figure, embedded
    assert page.ink > 0.02


@pytest.fixture(scope="module")
def soak_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result, _ = soak(tmp_path_factory.mktemp("soak"), "html-a")
    return Path(result.run_dir)


def test_soak_report_executes_the_notebook_once_and_renders_every_figure(soak_run: Path, driver: Any) -> None:
    p = subprocess.run([str(REPO / ".venv/bin/soak"), "report", str(soak_run)], capture_output=True, text=True,
                       timeout=240, cwd=REPO)
    assert p.returncode == 0, p.stdout + p.stderr
    html_path = soak_run.parent / "html-a.html"
    assert f"HTML: {html_path}" in p.stdout and (soak_run.parent / "html-a.ipynb").exists()
    html = html_path.read_text()
    assert_self_contained(html)
    signoff = json.loads((soak_run.parent / "html-a.json").read_text())
    assert signoff["verdict"] in html
    assert html.count('class="plotly-graph-div"') == 1  # explore, still zoomable in the page
    page = open_page(driver, html_path, expect_figures=1)
    assert page.console_errors == []
    assert len(page.images) >= 4 and all(w > 200 for w, _ in page.images)  # leak, FDs, threads, disk, LLM...
    assert all(n > 0 for n in page.figure_points)
    assert page.ink > 0.02
    mtime = (soak_run.parent / "html-a.ipynb").stat().st_mtime
    again = report(soak_run)  # the executed notebook is reused, the page rewritten
    assert again["ipynb"].stat().st_mtime == mtime and again["html"] == html_path


def test_export_refuses_what_is_not_a_notebook(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="not a notebook"):
        export_html(tmp_path / "x.json")
    with pytest.raises(ParameterError, match="does not exist"):
        report(tmp_path / "no-such-run")


def test_a_lane_without_an_executed_notebook_gets_one(demo: tuple[str, Path], tmp_path: Path) -> None:
    _, out = demo
    shutil.copytree(out / "demo-html", tmp_path / "demo-html")
    shutil.copy2(out / "demo-html.json", tmp_path / "demo-html.json")
    paths = report(tmp_path / "demo-html")
    assert paths == {"ipynb": tmp_path / "demo-html.ipynb", "html": tmp_path / "demo-html.html"}
    html = paths["html"].read_text()
    assert_self_contained(html)
    assert "demo-html" in html and "data:image/png;base64," in html
    assert json.loads((tmp_path / "demo-html.json").read_text()) == json.loads((out / "demo-html.json").read_text())
