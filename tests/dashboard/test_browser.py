"""The dashboard in a real browser: Chromium from the OS packages, driven by Playwright, on a
live ``conveyor dev`` with real runs.

It sees a completed run's waterfall with its steps and logs, a failed run's error, a parent's
progress bar; redrives a dead letter from the dead-letters page and watches its run page turn
to completed by itself (the page updates in place: no reload); and no page logs an error to
the console. The run page's screenshot is saved to ``artifacts/dashboard-run.png``, which CI
keeps.

Without ``/usr/bin/chromium`` the test is skipped, unless ``CONVEYOR_REQUIRE_BROWSER=1`` (set
by CI, which installs the browser) makes it fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.server.helpers import ROOT

from .conftest import BATCH_FAILED, BATCH_SIZE, Demo, dev_server, seed
from .helpers import run_of, send

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "artifacts"
TIMEOUT_MS = 30_000  # every wait for the page is bounded by this


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CONVEYOR_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason}, and CONVEYOR_REQUIRE_BROWSER=1 requires it", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("dashboard-browser")
    with dev_server("sqlite", workdir) as (server, _):
        events, runs = seed(server)
        yield Demo(server, "sqlite", workdir, events, runs)


class Console:
    """Every console error and uncaught exception of the pages it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(f"{page.url}: {msg.text}"))
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: uncaught {exc}"))
        return page


def test_the_dashboard_in_a_browser(chromium: Any, live: Demo) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    console = Console()
    context = chromium.new_context(viewport={"width": 1360, "height": 900})
    try:
        page = console.watch(context.new_page())
        base = live.server.url

        # the functions page, and the way from it to a function's runs
        page.goto(base + "/")
        expect(page.locator("h1")).to_have_text("Functions")
        page.get_by_role("link", name="process-order", exact=True).first.click()
        expect(page).to_have_url(base + "/runs?function=process-order")
        expect(page.locator(f'a[href="/runs/{live.runs["order"]["id"]}"]')).to_be_visible()

        # a completed run: its waterfall of steps, their output, its log lines
        page.goto(f"{base}/runs/{live.runs['order']['id']}")
        expect(page.locator("h1 .badge")).to_have_text("completed")
        rows = page.locator(".waterfall .wf-row")
        expect(rows).to_have_count(4)
        expect(rows.locator(".step-id")).to_have_text(
            ["validate-order", "price-order", "wait-for-settlement", "send-receipt"])
        expect(rows.nth(2).locator(".kind")).to_have_text("sleep")
        expect(rows.nth(3).locator(".attempts")).to_have_text("\u00d72")  # retried once
        bars = [rows.nth(i).locator("rect").bounding_box() for i in range(4)]
        assert all(b and b["width"] > 0 for b in bars), bars
        assert bars[2]["width"] > 5 * max(bars[i]["width"] for i in (0, 1, 3)), bars  # the sleep dominates
        rows.nth(1).locator("> summary").click()
        expect(rows.nth(1).locator(".wf-detail")).to_contain_text('"currency": "EUR"')
        logs = page.locator("table.logs tbody tr")
        expect(logs).to_have_count(4)  # three of the function's, one of the retry
        expect(logs.first).to_contain_text("processing order A-1001 for ada@example.com")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-run.png"), full_page=True)

        # a failed run: its error
        page.goto(f"{base}/runs/{live.runs['report']['id']}")
        expect(page.locator("h1 .badge")).to_have_text("failed")
        expect(page.locator(".panel-bad .error-head")).to_contain_text("ValueError")
        expect(page.locator(".panel-bad .error-message")).to_have_text("template 'monthly' is missing a 'totals' block")

        # a parent: its children's progress bar, and a link to each failed child
        page.goto(f"{base}/runs/{live.runs['batch']['id']}")
        bar = page.get_by_role("progressbar")
        expect(bar).to_be_visible()
        expect(bar).to_have_attribute("aria-valuenow", str(BATCH_SIZE))
        expect(page.locator(".progress-text")).to_contain_text(f"{BATCH_SIZE} of {BATCH_SIZE} ended")
        expect(page.locator(".failed-children li")).to_have_count(BATCH_FAILED)
        page.locator(".failed-children li a").first.click()
        expect(page.locator("h1")).to_contain_text("score-item")
        expect(page.locator(".panel-bad")).to_contain_text("has no credit history")

        # a dead letter: redriven from its row, once its function can succeed; its run page, open
        # in another tab, turns to completed by itself
        flag = live.workdir / f"flag-{uuid.uuid4().hex[:8]}"
        dead = run_of(live.server, send(live.server, "inventory.sync", {"flag": str(flag)}))
        assert dead["status"] == "failed"
        watcher = console.watch(context.new_page())
        navigations: list[str] = []
        watcher.on("framenavigated", lambda frame: frame == watcher.main_frame and navigations.append(frame.url))
        watcher.goto(f"{base}/runs/{dead['id']}")
        expect(watcher.locator("h1 .badge")).to_have_text("failed")
        page.bring_to_front()
        page.goto(base + "/dead-letters")
        row = page.locator(f"#dl-{dead['id']}")
        expect(row).to_contain_text("the warehouse API answered 503 Service Unavailable")
        flag.touch()
        row.get_by_role("button", name="Redrive").click()
        expect(page.locator(".flash-ok")).to_have_text(f"Redrove run {dead['id']}.")
        expect(page.locator(f"#dl-{dead['id']}")).to_have_count(0)
        expect(watcher.locator("h1 .badge")).to_have_text("completed")
        expect(watcher.locator(".waterfall .wf-row.s-completed .step-id")).to_have_text(["fetch-stock", "push-stock"])
        assert navigations == [f"{base}/runs/{dead['id']}"], navigations  # updated in place, never reloaded
        expect(watcher.locator("#live-state")).to_have_attribute("data-state", "live")

        assert not console.errors, console.errors
    finally:
        context.close()
