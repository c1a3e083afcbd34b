"""Bad input to the dashboard is a 4xx page (never a 5xx) and stores nothing, on both backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.server.helpers import counts

from .conftest import Demo
from .helpers import Browser

LONG = "x" * 5000

BAD_PAGES = {
    "unknown-status": "/runs?status=exploded",
    "unknown-window": "/runs?window=3y",
    "since-not-a-time": "/runs?since=yesterday",
    "since-infinite": "/runs?since=1e400",
    "since-nan": "/runs?since=nan",
    "since-negative": "/runs?since=-5",
    "since-year-99999": "/runs?since=99999-01-01",
    "until-before-since": "/runs?since=2001-01-02&until=2001-01-01",
    "age-too-large": "/runs?since=9999999d",
    "cursor-nul": "/runs?cursor=%00",
    "cursor-spaces": "/runs?cursor=a%20b",
    "cursor-long": f"/runs?cursor={LONG}",
    "function-long": f"/runs?function={LONG}",
    "function-control": "/runs?function=a%01b",
    "children-not-a-flag": "/runs?children=maybe",
    "events-cursor": "/events?cursor=garbage",
    "events-cursor-nan": "/events?cursor=nan~x",
    "events-cursor-no-id": "/events?cursor=1.5~",
    "events-name-long": f"/events?name={LONG}",
    "events-internal-flag": "/events?internal=2",
    "dead-letters-cursor": "/dead-letters?cursor=!!!",
    "dead-letters-function": "/dead-letters?function=%7F",
    "search-long": f"/search?q={LONG}",
    "search-control": "/search?q=a%0Ab",
    "unknown-run": "/runs/01h000000000000000000000",
    "run-id-long": f"/runs/{LONG}",
    "run-id-odd": "/runs/%E2%80%AE%00x",
    "unknown-event": "/events/%ff%fe",
    "static-traversal": "/static/..%2F..%2Fpages.py",
    "static-unknown-type": "/static/app.py",
    "huge-query": "/runs?" + "&".join(f"f{i}={'y' * 100}" for i in range(400)),
}


@pytest.fixture
def b(demo: Demo) -> Iterator[Browser]:
    before = counts(demo.server.db_url)
    yield demo.browser()
    assert demo.server.healthy(), demo.server.stderr()
    assert counts(demo.server.db_url) == before, "a refused request stored something"


@pytest.mark.parametrize("path", list(BAD_PAGES.values()), ids=list(BAD_PAGES))
def test_bad_page_requests_are_4xx(b: Browser, path: str) -> None:
    for headers in ({}, {"X-Conveyor-Partial": "1"}):
        resp = b.get(path, headers=headers)
        assert 400 <= resp.status_code < 500, (path, headers, resp.status_code, resp.text[:500])


def test_a_bad_filter_is_shown_on_the_runs_page_with_the_filters_kept(b: Browser) -> None:
    resp = b.get("/runs", params={"status": "exploded", "function": "process-order"})
    assert resp.status_code == 400
    assert "unknown status &#39;exploded&#39;" in resp.text
    assert '<option value="process-order" selected>' in resp.text  # the form still says what was asked


BAD_FORMS: dict[str, tuple[str, dict[str, str] | bytes, int]] = {
    "redrive-unknown-run": ("/dead-letters/redrive", {"run_id": "01nosuchrun"}, 404),
    "redrive-nul-in-id": ("/dead-letters/redrive", {"run_id": "01no\x00run"}, 404),
    "redrive-selected-nul": ("/dead-letters/redrive", {"selected": "\x00"}, 404),
    "redrive-nothing-chosen": ("/dead-letters/redrive", {}, 303),
    "redrive-all-not-1": ("/dead-letters/redrive", {"all": "yes"}, 303),
    "replay-unknown-run": ("/runs/01nosuchrun/replay", {}, 404),
    "cancel-unknown-run": ("/runs/01nosuchrun/cancel", {}, 404),
    "replay-nul-in-id": ("/runs/01no%00run/replay", {}, 404),
    "form-too-large": ("/dead-letters/redrive", {"run_id": "y" * 70_000}, 413),
    "form-not-utf8": ("/dead-letters/redrive", b"csrf=CSRF&run_id=%ff%fe\xff", 400),
}


@pytest.mark.parametrize("case", list(BAD_FORMS), ids=list(BAD_FORMS))
def test_bad_action_forms_are_refused_or_answered_with_a_message(b: Browser, case: str) -> None:
    path, form, status = BAD_FORMS[case]
    csrf = b.csrf()
    if isinstance(form, bytes):
        resp = b.client.post(path, content=form.replace(b"CSRF", csrf.encode()),
                             headers={"Origin": b.origin, "Content-Type": "application/x-www-form-urlencoded"})
    else:
        resp = b.post(path, {"csrf": csrf, **form})
    assert resp.status_code == status, resp.text[:500]
    if status == 303:
        assert "flash-error" in b.page(resp.headers["location"])


def test_many_selected_dead_letters_are_refused_whole(b: Browser) -> None:
    form = [("csrf", b.csrf()), *(("selected", f"01run{i}") for i in range(1001))]
    resp = b.client.post("/dead-letters/redrive", content="&".join(f"{k}={v}" for k, v in form).encode(),
                         headers={"Origin": b.origin, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 303
    assert "at most 1,000" in b.page(resp.headers["location"])
