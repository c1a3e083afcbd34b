"""Actions from the dashboard (redrive, replay, cancel) on a live ``conveyor dev``: they work
with the page's CSRF token from the page's own origin, and change nothing otherwise."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import wait_until

from .conftest import Demo
from .helpers import Browser, api_run, run_of, send, status_is, text_of


def dead_letter(demo: Demo) -> tuple[dict[str, Any], Path]:
    """A failed run of ``sync-inventory`` and the flag file that lets it succeed once created."""
    flag = demo.workdir / f"flag-{uuid.uuid4().hex[:8]}"
    run = run_of(demo.server, send(demo.server, "inventory.sync", {"flag": str(flag)}))
    assert run["status"] == "failed", run
    return run, flag


def flash(b: Browser, path: str) -> str:
    match = re.search(r'<div class="flash (flash-\w+)" role="status">([^<]*)</div>', b.page(path))
    assert match, f"no message on {path}"
    return f"{match.group(1)}: {match.group(2)}"


def test_redrive_one_dead_letter_from_its_row(demo: Demo) -> None:
    run, flag = dead_letter(demo)
    b = demo.browser()
    csrf = b.csrf("/dead-letters")
    flag.touch()
    resp = b.post("/dead-letters/redrive", {"csrf": csrf, "run_id": run["id"], "back": "/dead-letters"})
    assert resp.status_code == 303 and resp.headers["location"] == "/dead-letters", resp.text
    assert flash(b, "/dead-letters") == f"flash-ok: Redrove run {run['id']}."
    done = status_is(demo.server, run["id"], "completed")
    assert done["output"] == "pushed"
    assert "completed" in text_of(b.page(f"/runs/{run['id']}"))
    assert f'id="dl-{run["id"]}"' not in b.page("/dead-letters")


def test_redrive_selected_dead_letters(demo: Demo) -> None:
    letters = [dead_letter(demo) for _ in range(2)]
    b = demo.browser()
    csrf = b.csrf("/dead-letters")
    for _, flag in letters:
        flag.touch()
    form = [("csrf", csrf), ("bulk", "selected"), *(("selected", run["id"]) for run, _ in letters)]
    resp = b.client.post("/dead-letters/redrive", content=str(httpx.QueryParams(form)).encode(),
                         headers={"Origin": b.origin, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 303, resp.text
    assert flash(b, "/dead-letters") == "flash-ok: Redrove 2 dead letters."
    for run, _ in letters:
        status_is(demo.server, run["id"], "completed")


def test_redrive_all_dead_letters_of_a_function(demo: Demo) -> None:
    runs = [run_of(demo.server, send(demo.server, "report.requested", {"template": "weekly"})) for _ in range(2)]
    failed_before = {r["id"]: r["ended_at"] for r in httpx.get(
        demo.server.url + "/api/v1/dead-letters", params={"function": "render-report"}).json()["dead_letters"]}
    assert {r["id"] for r in runs} <= set(failed_before)
    b = demo.browser()
    resp = b.post("/dead-letters/redrive", {"csrf": b.csrf("/dead-letters?function=render-report"), "all": "1",
                                            "function": "render-report",
                                            "back": "/dead-letters?function=render-report"})
    assert resp.status_code == 303 and resp.headers["location"] == "/dead-letters?function=render-report"
    assert flash(b, "/dead-letters?function=render-report") == f"flash-ok: Redrove {len(failed_before)} dead letters."
    for run_id, ended_at in failed_before.items():  # each ran again, and failed again (the template is still
        # missing): it ended a second time
        again = wait_until(lambda run_id=run_id, ended_at=ended_at: (r := api_run(demo.server, run_id))["status"]
                           == "failed" and r["ended_at"] != ended_at and r,
                           timeout=60, message=lambda run_id=run_id: f"run {run_id} to fail again after its redrive")
        assert again["steps"][-1]["attempts"] == 1


def test_replay_a_failed_run_from_its_page(demo: Demo) -> None:
    run, flag = dead_letter(demo)
    b = demo.browser()
    csrf = b.csrf(f"/runs/{run['id']}")
    flag.touch()
    resp = b.post(f"/runs/{run['id']}/replay", {"csrf": csrf})
    assert resp.status_code == 303 and resp.headers["location"] == f"/runs/{run['id']}"
    assert "queued again" in flash(b, f"/runs/{run['id']}")
    done = status_is(demo.server, run["id"], "completed")
    assert [s["id"] for s in done["steps"]] == ["fetch-stock", "push-stock"]


def test_replay_a_dead_letter_from_its_row(demo: Demo) -> None:
    run, flag = dead_letter(demo)
    b = demo.browser()
    html = b.page("/dead-letters")
    assert f'formaction="/runs/{run["id"]}/replay"' in html
    flag.touch()
    resp = b.post(f"/runs/{run['id']}/replay", {"csrf": b.csrf("/dead-letters"), "back": "/dead-letters",
                                                "selected": "ignored"})
    assert resp.status_code == 303 and resp.headers["location"] == "/dead-letters"
    assert "queued again" in flash(b, "/dead-letters")
    status_is(demo.server, run["id"], "completed")


def test_cancel_a_sleeping_run_from_its_page(demo: Demo) -> None:
    run = status_is(demo.server, run_of(demo.server, send(demo.server, "nap.requested"), ended=False)["id"],
                    "waiting")
    b = demo.browser()
    html = b.page(f"/runs/{run['id']}")
    assert "Cancel" in html and "sleeping" in html
    resp = b.post(f"/runs/{run['id']}/cancel", {"csrf": b.csrf(f"/runs/{run['id']}")})
    assert resp.status_code == 303
    assert api_run(demo.server, run["id"])["status"] == "cancelled"
    assert "Cancelled run" in flash(b, f"/runs/{run['id']}")


def test_an_action_that_cannot_apply_says_why(demo: Demo) -> None:
    b = demo.browser()
    completed = demo.runs["order"]["id"]
    resp = b.post(f"/runs/{completed}/replay", {"csrf": b.csrf()})
    assert resp.status_code == 303
    message = flash(b, f"/runs/{completed}")
    assert message.startswith("flash-error:") and "is completed" in message
    resp = b.post("/dead-letters/redrive", {"csrf": b.csrf(), "run_id": "01nosuchrun"})
    assert resp.status_code == 404 and "no run with id" in resp.text
    assert api_run(demo.server, completed)["status"] == "completed"


@pytest.mark.parametrize("case", [
    "no-token", "wrong-token", "another-sessions-token", "foreign-origin", "null-origin", "no-origin-no-referer",
    "foreign-referer", "cross-site-fetch", "no-cookie", "json-body",
])
def test_actions_without_the_csrf_token_or_from_another_site_are_refused(demo: Demo, case: str) -> None:
    run, flag = dead_letter(demo)
    flag.touch()  # were the action to go through, the run would complete
    b = demo.browser()
    csrf = b.csrf(f"/runs/{run['id']}")
    path = f"/runs/{run['id']}/replay"
    form: dict[str, str] = {"csrf": csrf}
    headers: dict[str, str] = {}
    origin: str | None = "same"
    if case == "no-token":
        form = {}
    elif case == "wrong-token":
        form = {"csrf": csrf[:-2] + ("AA" if not csrf.endswith("AA") else "BB")}
    elif case == "another-sessions-token":
        form = {"csrf": demo.browser().csrf()}
    elif case == "foreign-origin":
        origin = "http://evil.example"
    elif case == "null-origin":
        origin = "null"
    elif case == "no-origin-no-referer":
        origin = None
    elif case == "foreign-referer":
        origin, headers = None, {"Referer": "http://evil.example/page"}
    elif case == "cross-site-fetch":
        headers = {"Sec-Fetch-Site": "cross-site"}
    elif case == "no-cookie":
        b.client.cookies.clear()
    if case == "json-body":
        resp = b.client.post(path, json=form, headers={"Origin": b.origin})
        assert resp.status_code == 415, resp.text
    else:
        resp = b.post(path, form, origin=origin, headers=headers)
        assert resp.status_code == 403, resp.text
        assert "text/html" in resp.headers["content-type"]
    after = api_run(demo.server, run["id"])
    assert after["status"] == "failed" and after["ended_at"] == run["ended_at"], after


def test_a_same_origin_referer_is_enough_when_the_browser_sends_no_origin(demo: Demo) -> None:
    run, flag = dead_letter(demo)
    flag.touch()
    b = demo.browser()
    resp = b.post(f"/runs/{run['id']}/replay", {"csrf": b.csrf()}, origin=None,
                  headers={"Referer": f"{demo.server.url}/runs/{run['id']}"})
    assert resp.status_code == 303, resp.text
    status_is(demo.server, run["id"], "completed")


def test_gets_never_change_anything(demo: Demo) -> None:
    run, flag = dead_letter(demo)
    flag.touch()
    b = demo.browser()
    for path in (f"/runs/{run['id']}/replay", f"/runs/{run['id']}/cancel",
                 f"/dead-letters/redrive?run_id={run['id']}&csrf={b.csrf()}"):
        assert 400 <= b.get(path).status_code < 500, path
    assert api_run(demo.server, run["id"])["status"] == "failed"
