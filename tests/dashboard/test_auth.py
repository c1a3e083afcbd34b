"""The dashboard of a server with auth configured: every page needs a session opened with an
API token (or that token as a bearer header); event keys, wrong tokens and forged cookies open
nothing; no secret is ever echoed."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx
import pytest
from tests.server.helpers import API_TOKEN, EVENT_KEY

from conveyor.dashboard.session import COOKIE, Sessions

from .conftest import Demo
from .helpers import Browser, api_run, run_of, send, status_is

PAGES = ["/", "/runs", "/runs?status=failed", "/events", "/dead-letters", "/pools", "/search?q=x",
         "/runs/01anyrun", "/events/any-event"]


def login(b: Browser, token: str = API_TOKEN, next_path: str = "/") -> httpx.Response:
    assert b.get("/login").status_code == 200
    return b.post("/login", {"token": token, "next": next_path})


def session_cookie(resp: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in resp.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


@pytest.mark.parametrize("path", PAGES)
def test_pages_send_strangers_to_the_login_page(auth_demo: Demo, path: str) -> None:
    b = auth_demo.browser()
    resp = b.get(path)
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/login?" + httpx.QueryParams({"next": path}).__str__()
    assert b.get(path, headers={"X-Conveyor-Partial": "1"}).status_code == 401
    assert COOKIE not in resp.headers.get("set-cookie", "")


def test_actions_of_strangers_are_refused_and_change_nothing(auth_demo: Demo) -> None:
    run = status_is(auth_demo.server, run_of(auth_demo.server, send(auth_demo.server, "nap.requested"),
                                             ended=False)["id"], "waiting")
    b = auth_demo.browser()
    for path in (f"/runs/{run['id']}/cancel", "/dead-letters/redrive", "/logout"):
        resp = b.post(path, {"csrf": "anything", "run_id": run["id"]})
        assert resp.status_code == 401, (path, resp.text)
    assert api_run(auth_demo.server, run["id"])["status"] == "waiting"


@pytest.mark.parametrize("token", ["wrong-token", EVENT_KEY, API_TOKEN + "x", API_TOKEN[:-1], "", " " * 3])
def test_a_login_without_an_api_token_is_refused(auth_demo: Demo, token: str) -> None:
    b = auth_demo.browser()
    resp = login(b, token)
    assert resp.status_code == 401, resp.text
    assert "not an API token" in resp.text
    assert COOKIE not in resp.headers.get("set-cookie", "")
    for secret in (API_TOKEN, EVENT_KEY):
        assert secret not in resp.text
    assert b.get("/").status_code == 303


def test_a_login_with_an_api_token_opens_a_session(auth_demo: Demo) -> None:
    b = auth_demo.browser()
    resp = login(b, API_TOKEN, "/runs?status=completed")
    assert resp.status_code == 303 and resp.headers["location"] == "/runs?status=completed"
    morsel = session_cookie(resp)[COOKIE]
    assert morsel["httponly"] and morsel["samesite"].lower() == "strict" and morsel["path"] == "/"
    assert 11 * 3600 <= int(morsel["max-age"]) <= 12 * 3600
    assert not morsel["secure"]  # plain http here; https requests get Secure
    assert API_TOKEN not in morsel.value
    html = b.page("/runs?status=completed")
    assert auth_demo.runs["order"]["id"] in html and "Log out" in html
    assert API_TOKEN not in html and EVENT_KEY not in html


def test_a_session_can_act_with_its_csrf_token(auth_demo: Demo) -> None:
    run = status_is(auth_demo.server, run_of(auth_demo.server, send(auth_demo.server, "nap.requested"),
                                             ended=False)["id"], "waiting")
    b = auth_demo.browser()
    login(b)
    resp = b.post(f"/runs/{run['id']}/cancel", {"csrf": b.csrf(f"/runs/{run['id']}")})
    assert resp.status_code == 303, resp.text
    assert api_run(auth_demo.server, run["id"])["status"] == "cancelled"


def test_the_login_form_only_takes_logins_from_this_site(auth_demo: Demo) -> None:
    b = auth_demo.browser()
    resp = b.post("/login", {"token": API_TOKEN}, origin="http://evil.example")
    assert resp.status_code == 403 and COOKIE not in resp.headers.get("set-cookie", "")


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:x"])
def test_after_login_the_dashboard_only_redirects_to_its_own_pages(auth_demo: Demo, target: str) -> None:
    resp = login(auth_demo.browser(), API_TOKEN, target)
    assert resp.status_code == 303 and resp.headers["location"] == "/"


def test_a_bearer_api_token_is_accepted_and_an_event_key_is_not(auth_demo: Demo) -> None:
    with httpx.Client(base_url=auth_demo.server.url, timeout=30) as client:
        assert client.get("/runs", headers={"Authorization": f"Bearer {API_TOKEN}"}).status_code == 200
        assert client.get("/runs", headers={"Authorization": f"Bearer {EVENT_KEY}"}).status_code == 303
        assert client.get("/runs", headers={"Authorization": f"Basic {API_TOKEN}"}).status_code == 303


def test_forged_tampered_and_foreign_cookies_are_refused(auth_demo: Demo) -> None:
    b = auth_demo.browser()
    good = session_cookie(login(b))[COOKIE].value
    assert b.get("/").status_code == 200
    version, expires, nonce, signature = good.split(".")
    forged = [
        f"{version}.{int(expires) + 3600}.{nonce}.{signature}",  # a longer life, same signature
        f"{version}.{expires}.{nonce[:-1]}A.{signature}",  # another nonce
        f"{version}.{expires}.{nonce}.{signature[:-2]}AA",  # a made-up signature
        Sessions(["another-token-xyz"], required=True).open(Sessions(["another-token-xyz"], required=True)
                                                            .token_key("another-token-xyz")).cookie,
        Sessions([], required=False).open().cookie,  # an anonymous session of an open server
        "v1.99999999999.x.y", "garbage", "",
    ]
    for value in forged:
        with httpx.Client(base_url=auth_demo.server.url, timeout=30, follow_redirects=False,
                          cookies={COOKIE: value or ""}) as client:
            assert client.get("/").status_code == 303, value


def test_logout_ends_the_session(auth_demo: Demo) -> None:
    b = auth_demo.browser()
    login(b)
    resp = b.post("/logout", {"csrf": b.csrf()})
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    deleted = session_cookie(resp)[COOKIE]
    assert deleted.value == "" and deleted["max-age"] == "0"
    assert "logged out" in b.page("/login")
    assert b.get("/").status_code == 303


def test_static_files_and_the_login_page_need_no_session(auth_demo: Demo) -> None:
    b = auth_demo.browser()
    html = b.page("/login")
    assert 'type="password"' in html and 'name="token"' in html
    css = re.search(r'href="(/static/app\.css\?v=\w+)"', html)
    assert css and b.get(css.group(1)).status_code == 200
