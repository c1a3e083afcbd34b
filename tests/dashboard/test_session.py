"""Sessions and CSRF tokens without a server: signing, expiry, rotation, and the origin check."""

from __future__ import annotations

import pytest

from conveyor.dashboard.session import SESSION_TTL, Sessions, safe_next, same_origin


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_opened_with_a_token_is_accepted_by_any_process_with_that_token() -> None:
    one, two = Sessions(["token-aaaa", "token-bbbb"], required=True), Sessions(["token-bbbb"], required=True)
    key = one.token_key("token-bbbb")
    assert key is not None
    cookie = one.open(key).cookie
    assert cookie
    session = two.from_cookie(cookie)
    assert session is not None and session.logged_in
    assert two.check_csrf(session, one.csrf(one.from_cookie(cookie)))  # type: ignore[arg-type]


def test_removing_a_token_ends_the_sessions_opened_with_it() -> None:
    before = Sessions(["old-token-1", "other-token"], required=True)
    cookie = before.open(before.token_key("old-token-1")).cookie
    kept = before.open(before.token_key("other-token")).cookie
    after = Sessions(["new-token-1", "other-token"], required=True)
    assert after.from_cookie(cookie) is None
    assert after.from_cookie(kept) is not None


def test_event_keys_and_near_misses_are_not_tokens() -> None:
    s = Sessions(["at-secret"], required=True)
    for given in ("ek-secret", "at-secre", "at-secretx", "AT-SECRET", "", "at-secret "):
        assert s.token_key(given) is None, given
    assert s.token_key("at-secret") is not None


def test_a_session_expires_after_its_ttl() -> None:
    clock = Clock()
    s = Sessions(["token-aaaa"], required=True, clock=clock)
    cookie = s.open(s.token_key("token-aaaa")).cookie
    clock.now += SESSION_TTL - 1
    assert s.from_cookie(cookie) is not None
    clock.now += 2
    assert s.from_cookie(cookie) is None


@pytest.mark.parametrize("mangle", [
    lambda c: c.replace("v1.", "v2.", 1),
    lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),
    lambda c: ".".join(c.split(".")[:3]),
    lambda c: c + ".x",
    lambda c: c.split(".")[0] + ".notanumber." + ".".join(c.split(".")[2:]),
    lambda c: c.replace(c.split(".")[1], str(int(c.split(".")[1]) + 10**6)),  # too far in the future
    lambda c: c + "é",
    lambda c: "x" * 300,
])
def test_mangled_cookies_are_refused(mangle) -> None:
    s = Sessions(["token-aaaa"], required=True)
    cookie = s.open(s.token_key("token-aaaa")).cookie
    assert s.from_cookie(cookie) is not None
    assert s.from_cookie(mangle(cookie)) is None


def test_an_open_server_issues_anonymous_sessions_that_an_authenticated_one_refuses() -> None:
    open_server = Sessions([], required=False)
    session = open_server.open()
    assert not session.logged_in
    assert open_server.from_cookie(session.cookie) is not None
    assert Sessions(["token-aaaa"], required=True).from_cookie(session.cookie) is None
    locked = Sessions([], required=True)  # event keys only: no one can log in
    assert locked.required and not locked.can_login
    assert locked.from_cookie(session.cookie) is None


def test_csrf_tokens_are_bound_to_their_session() -> None:
    s = Sessions(["token-aaaa"], required=True)
    key = s.token_key("token-aaaa")
    one, two = s.from_cookie(s.open(key).cookie), s.from_cookie(s.open(key).cookie)
    assert one and two
    assert s.check_csrf(one, s.csrf(one))
    assert not s.check_csrf(one, s.csrf(two))
    assert not s.check_csrf(one, None) and not s.check_csrf(one, "") and not s.check_csrf(one, "ünïcode")


def test_bearer_headers() -> None:
    s = Sessions(["token-aaaa"], required=True)
    assert s.from_bearer("Bearer token-aaaa") is not None
    assert s.from_bearer("bearer  token-aaaa") is not None
    for header in (None, "", "Bearer", "Bearer token-aaab", "Basic token-aaaa", "token-aaaa"):
        assert s.from_bearer(header) is None, header


@pytest.mark.parametrize("headers, ok", [
    ({"host": "127.0.0.1:8288", "origin": "http://127.0.0.1:8288"}, True),
    ({"host": "jobs.example", "origin": "https://jobs.example"}, True),  # TLS ended by a proxy
    ({"host": "127.0.0.1:8288", "referer": "http://127.0.0.1:8288/runs/x"}, True),
    ({"host": "127.0.0.1:8288", "origin": "http://127.0.0.1:9999"}, False),
    ({"host": "127.0.0.1:8288", "origin": "http://evil.example"}, False),
    ({"host": "127.0.0.1:8288", "origin": "null"}, False),
    ({"host": "127.0.0.1:8288"}, False),
    ({"host": "127.0.0.1:8288", "referer": "http://evil.example/"}, False),
    ({"host": "127.0.0.1:8288", "origin": "http://127.0.0.1:8288", "sec-fetch-site": "cross-site"}, False),
    ({"host": "127.0.0.1:8288", "origin": "http://127.0.0.1:8288", "sec-fetch-site": "same-site"}, False),
    ({"origin": "http://127.0.0.1:8288"}, False),
    ({"host": "a", "origin": "http://[::1"}, False),
])
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    assert same_origin(headers) is ok


@pytest.mark.parametrize("given, expected", [
    ("/runs?status=failed", "/runs?status=failed"), (None, "/"), ("", "/"), ("runs", "/"),
    ("//evil.example", "/"), ("/\\evil.example", "/"), ("https://evil.example/", "/"), ("/a\nb", "/"),
    ("/" + "x" * 3000, "/"),
])
def test_safe_next(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected
