"""Every page of the dashboard, rendered by a live ``conveyor dev`` over real runs, on both backends."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from conveyor.dashboard.format import percent

from .conftest import BATCH_FAILED, BATCH_SIZE, Demo
from .helpers import Browser, text_of


def test_functions_page_lists_triggers_pools_and_window_counts(demo: Demo) -> None:
    b = demo.browser()
    page = text_of(b.page("/"))
    for fid, trigger in (("process-order", "order.placed"), ("render-report", "report.requested"),
                         ("score-batch", "batch.requested"), ("sync-inventory", "inventory.sync")):
        assert fid in page and trigger in page, page
    assert "invoked" in text_of(_row(b.page("/"), 'href="/runs?function=score-item"'))  # no trigger of its own
    # runs and failure rate of the last hour, then of the day: only the functions whose runs the
    # seed alone makes (other tests add runs of the others, and the page caches its counts)
    fixed = {"process-order": ["1", "0 %"], "score-batch": ["1", "0 %"],
             "score-item": [str(BATCH_SIZE), percent(BATCH_FAILED, BATCH_SIZE)]}
    for fid, cells in fixed.items():
        assert _count_cells(b, fid) == cells * 2, fid
    assert "default" in _row(b.page("/"), 'href="/runs?function=process-order"')


def _count_cells(b: Browser, fid: str) -> list[str]:
    """The function's runs and failure rate over the last hour, then over the last day."""
    row = _row(b.page("/"), f'href="/runs?function={fid}"')
    return [text_of(c) for c in re.findall(r'<td class="num">(.*?)</td>', row, flags=re.S)][:4]


def _row(html: str, marker: str) -> str:
    """The table row that contains ``marker``."""
    start = html.index(marker)
    return html[html.rindex("<tr", 0, start): html.index("</tr>", start)]


def test_runs_page_lists_and_filters_runs(demo: Demo) -> None:
    b = demo.browser()
    runs = demo.runs
    page = b.page("/runs")
    for what in ("order", "report", "sync"):
        assert runs[what]["id"] in page
    by_function = b.page("/runs?function=process-order")
    assert runs["order"]["id"] in by_function and runs["report"]["id"] not in by_function
    failed = b.page("/runs?status=failed")
    assert runs["report"]["id"] in failed and runs["sync"]["id"] in failed and runs["order"]["id"] not in failed
    assert "the warehouse API answered 503" in text_of(failed)  # a failed run's error, in the list
    by_event = b.page("/runs?event=" + quote(demo.events["order"]))
    assert runs["order"]["id"] in by_event and runs["report"]["id"] not in by_event


def test_runs_page_filters_by_time(demo: Demo) -> None:
    b = demo.browser()
    run_id = demo.runs["order"]["id"]
    created = datetime.fromisoformat(demo.runs["order"]["created_at"])
    before, after = (created - timedelta(seconds=5)), (created + timedelta(seconds=5))
    inside = {"window": "1h"}, {"since": before.isoformat()}, {"since": "1d", "until": after.isoformat()}, \
        {"until": str(after.timestamp())}
    outside = {"since": after.isoformat()}, {"until": before.strftime("%Y-%m-%dT%H:%M:%S")}, \
        {"since": "2001-01-01", "until": "2001-01-02"}
    for query in inside:
        assert run_id in b.get("/runs", params=query).text, query
    for query in outside:
        resp = b.get("/runs", params=query)
        assert resp.status_code == 200 and run_id not in resp.text, query
        assert "No runs match these filters" in resp.text, query


def test_children_of_a_parent_are_paginated_by_keyset(demo: Demo) -> None:
    b = demo.browser()
    parent = demo.runs["batch"]["id"]
    first = b.page(f"/runs?parent={parent}")
    ids = re.findall(rf'href="/runs/({re.escape(parent)}\.[^"]+)"', first)
    assert len(set(ids)) == 50, len(set(ids))
    older = re.search(r'href="(/runs\?[^"]*cursor=[^"]+)" rel="next"', first)
    assert older, "no link to the older page"
    second = b.page(older.group(1).replace("&amp;", "&"))
    more = set(re.findall(rf'href="/runs/({re.escape(parent)}\.[^"]+)"', second))
    assert len(more) == BATCH_SIZE - 50 and not more & set(ids)
    assert 'rel="next"' not in second  # the last page says so


def test_a_completed_run_shows_its_timeline_logs_input_and_output(demo: Demo) -> None:
    b = demo.browser()
    html = b.page(f"/runs/{demo.runs['order']['id']}")
    steps = re.findall(r'data-key="step-([^"]+)"', html)
    assert steps == ["validate-order", "price-order", "wait-for-settlement", "send-receipt"]
    page = text_of(html)
    assert "sleep wait-for-settlement" in page  # the step's kind
    assert html.count('title="2 attempts"') == 1  # send-receipt succeeded on its second attempt
    assert page.count("completed") >= 5  # the run and its four steps
    for line in ("processing order A-1001 for ada@example.com", "priced at 51.6 EUR",
                 "receipt receipt-A-1001 sent without a tracking number",
                 "attempt 1 of step 'send-receipt' failed (RuntimeError: SMTP 451: try again later)"):
        assert line in page
    assert "WARNING" in page and "INFO" in page
    assert '"receipt": "receipt-A-1001"' in html.replace("&#34;", '"')  # the output, pretty JSON
    assert "ada@example.com" in page  # the input (the event's data)
    bars = re.findall(r'<rect x="([\d.]+)" y="1.5" width="([\d.]+)"', html)
    assert len(bars) == 4
    sleep_width = float(bars[2][1])
    assert sleep_width > max(float(w) for _, w in (bars[0], bars[1], bars[3])), bars  # the sleep is the long one


def test_a_failed_run_shows_its_error_and_the_failed_step(demo: Demo) -> None:
    page = text_of(demo.browser().page(f"/runs/{demo.runs['report']['id']}"))
    assert "ValueError" in page and "template 'monthly' is missing a 'totals' block" in page
    assert "in step render-pdf" in page
    assert "Traceback" in page
    assert "Replay" in page and "Cancel" not in page


def test_a_parent_shows_its_childrens_progress_and_failed_children(demo: Demo) -> None:
    b = demo.browser()
    parent = demo.runs["batch"]["id"]
    html = b.page(f"/runs/{parent}")
    page = text_of(html)
    assert f"{BATCH_SIZE} of {BATCH_SIZE} ended" in page
    assert f"completed {BATCH_SIZE - BATCH_FAILED}" in page and f"failed {BATCH_FAILED}" in page
    assert 'role="progressbar"' in html and f'aria-valuenow="{BATCH_SIZE}"' in html
    segments = dict(re.findall(r'class="seg s-(\w+)" x="[\d.]+" y="0" width="([\d.]+)"', html))
    assert float(segments["completed"]) == pytest.approx(80.0) and float(segments["failed"]) == pytest.approx(20.0)
    failed_links = set(re.findall(rf'href="/runs/({re.escape(parent)}\.[^"]+)"', html))
    assert len(failed_links) == BATCH_FAILED
    for child in failed_links:
        assert int(child.rsplit(".", 1)[1]) % 5 == 4  # item i+1 is divisible by 5
    assert "has no credit history" in page
    assert f'href="/runs?parent={parent}"' in html  # the list of every child


def test_a_child_links_back_to_its_parent(demo: Demo) -> None:
    parent = demo.runs["batch"]["id"]
    child = f"{parent}.{_step_tag(demo)}.000000004"
    html = demo.browser().page(f"/runs/{child}")
    assert f'href="/runs/{parent}"' in html and "item 5 has no credit history" in text_of(html)


def _step_tag(demo: Demo) -> str:
    html = demo.browser().page(f"/runs?parent={demo.runs['batch']['id']}")
    match = re.search(rf'{re.escape(demo.runs["batch"]["id"])}\.(\w+)\.000000000', html)
    assert match
    return match.group(1)


def test_events_page_shows_events_and_the_runs_they_started(demo: Demo) -> None:
    b = demo.browser()
    html = b.page("/events")
    assert demo.events["order"] in html and demo.events["report"] in html
    row = _row(html, f'href="/events/{demo.events["order"]}"')
    assert f'href="/runs/{demo.runs["order"]["id"]}"' in row and "process-order" in row and "s-completed" in row
    named = b.page("/events?name=report.requested")
    assert demo.events["report"] in named and demo.events["order"] not in named
    # an internal name is listed when asked for, without ticking "Internal"
    children = b.page("/events?name=" + quote("conveyor/map"))
    assert f'href="/runs/{demo.runs["batch"]["id"]}.' in children and demo.events["report"] not in children
    event_page = b.page(f"/events/{demo.events['report']}")
    assert demo.runs["report"]["id"] in event_page and "monthly" in event_page


def test_dead_letters_page_shows_each_failure(demo: Demo) -> None:
    html = demo.browser().page("/dead-letters")
    row = _row(html, f'id="dl-{demo.runs["sync"]["id"]}"')
    assert "RuntimeError" in row and "push-stock" in row and "the warehouse API answered 503" in row
    assert f'name="run_id" value="{demo.runs["sync"]["id"]}"' in row  # its redrive button
    only = demo.browser().page("/dead-letters?function=render-report")
    assert demo.runs["report"]["id"] in only and demo.runs["sync"]["id"] not in only


def test_pools_page_shows_the_live_worker(demo: Demo) -> None:
    html = demo.browser().page("/pools")
    page = text_of(html)
    assert 'id="pool-default"' in html
    assert f"{demo.server.pid}" in page  # the dev process's worker serves it
    assert "served" in page and "Due jobs" in page and "Oldest due" in page
    for fid in ("process-order", "score-item", "sync-inventory"):
        assert fid in page


def test_search_finds_runs_and_events_by_id(demo: Demo) -> None:
    b = demo.browser()
    run_id, event_id = demo.runs["order"]["id"], demo.events["order"]
    resp = b.get("/search", params={"q": f"  {run_id} "})
    assert resp.status_code == 303 and resp.headers["location"] == f"/runs/{run_id}"
    resp = b.get("/search", params={"q": event_id})
    assert resp.status_code == 303 and resp.headers["location"] == f"/events/{quote(event_id, safe='')}"
    resp = b.get("/search", params={"q": "no-such-thing-<b>"})
    assert resp.status_code == 404 and "text/html" in resp.headers["content-type"]
    assert "no-such-thing-&lt;b&gt;" in resp.text and "no-such-thing-<b>" not in resp.text


def test_unknown_ids_are_friendly_404_pages(demo: Demo) -> None:
    b = demo.browser()
    for path in ("/runs/01nosuchrun", "/events/no-such-event", "/runs/a%2Fb"):
        resp = b.get(path)
        assert resp.status_code == 404 and "text/html" in resp.headers["content-type"], path
        assert "Not found" in resp.text


def test_partial_requests_answer_only_the_live_region(demo: Demo) -> None:
    b = demo.browser()
    run_id = demo.runs["order"]["id"]
    full = b.page(f"/runs/{run_id}")
    part = b.get(f"/runs/{run_id}", headers={"X-Conveyor-Partial": "1"})
    assert part.status_code == 200
    assert "<html" not in part.text and "<header" not in part.text and 'id="live"' not in part.text
    assert 'data-key="step-send-receipt"' in part.text and 'id="live"' in full
    assert "no-store" in part.headers["cache-control"]


def test_pages_carry_security_headers_and_stay_out_of_the_api_document(demo: Demo) -> None:
    resp = demo.browser().get("/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert resp.headers["x-frame-options"] == "DENY"
    paths = httpx.get(demo.server.url + "/openapi.json", timeout=30).json()["paths"]
    assert all(p.startswith("/api/") or p in ("/healthz", "/metrics") for p in paths), sorted(paths)
    assert httpx.get(demo.server.url + "/docs", timeout=30).status_code == 200


def test_static_files_are_served_with_their_types(demo: Demo) -> None:
    b = demo.browser()
    html = b.page("/")
    for name, kind in (("app.css", "text/css"), ("app.js", "text/javascript"), ("favicon.svg", "image/svg+xml")):
        url = re.search(rf'"(/static/{re.escape(name)}\?v=\w+)"', html)
        assert url, name
        resp = b.get(url.group(1).replace("&amp;", "&"))
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(kind)
        assert "immutable" in resp.headers["cache-control"]
    assert b.get("/static/nope.js").status_code == 404
    assert b.get("/static/..%2Fpages.py").status_code == 404


def test_times_are_rendered_in_utc_with_machine_readable_stamps(demo: Demo) -> None:
    html = demo.browser().page(f"/runs/{demo.runs['order']['id']}")
    stamps = re.findall(r'<time datetime="([^"]+)" title="([^"]+)"', html)
    assert stamps
    for iso, title in stamps:
        assert datetime.fromisoformat(iso).utcoffset() == timedelta(0) and title.endswith("UTC")
