"""Keys and tokens: event keys open only the intake, API tokens every /api/v1 route, the
health check and the API document stay public, and no secret is ever echoed."""

from __future__ import annotations

import httpx
import pytest

from .helpers import API_TOKEN, EVENT_KEY, assert_accepted, assert_error, clean_env, counts, describe

SECRETS = (EVENT_KEY, API_TOKEN)

MANAGEMENT_ROUTES = [
    ("GET", "/api/v1/runs"),
    ("GET", "/api/v1/runs/some-run"),
    ("GET", "/api/v1/runs/some-run/logs"),
    ("POST", "/api/v1/runs/some-run/cancel"),
    ("POST", "/api/v1/runs/some-run/replay"),
    ("GET", "/api/v1/dead-letters"),
    ("POST", "/api/v1/dead-letters/redrive"),
    ("GET", "/api/v1/functions"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/events/some-event"),
]

BAD_AUTHORIZATIONS = {
    "missing": None,
    "wrong-key": "Bearer ek-secreX",
    "key-with-suffix": f"Bearer {EVENT_KEY}x",
    "key-prefix": f"Bearer {EVENT_KEY[:-1]}",
    "bare-bearer": "Bearer",
    "no-scheme": EVENT_KEY,
    "basic-scheme": "Basic ZWstc2VjcmV0Og==",
    "token-as-basic": f"Basic {API_TOKEN}",
}


def request(server, method: str, path: str, authorization: str | None, **kwargs) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if authorization is not None:
        headers["Authorization"] = authorization
    with httpx.Client(base_url=server.url, timeout=30) as client:
        return client.request(method, path, headers=headers, **kwargs)


def assert_unauthorized(resp: httpx.Response, *sent: str | None) -> None:
    assert_error(resp, 401, "unauthorized")
    assert resp.headers.get("www-authenticate", "").lower().startswith("bearer"), describe(resp)
    for secret in (*SECRETS, *(s for s in sent if s)):
        value = secret.split(" ", 1)[1] if " " in secret else secret
        if value.lower() not in ("bearer", "basic"):
            assert value not in resp.text, f"the response echoes a key: {describe(resp)}"


@pytest.fixture
def srv(shared_auth_server):
    server = shared_auth_server.server
    before = counts(server.db_url)
    yield server
    assert server.healthy(), server.stderr()
    assert counts(server.db_url) == before, "a refused request stored something"


@pytest.mark.parametrize("authorization", list(BAD_AUTHORIZATIONS.values()), ids=list(BAD_AUTHORIZATIONS))
def test_intake_without_a_good_key_is_401_and_stores_nothing(srv, authorization) -> None:
    resp = request(srv, "POST", "/api/v1/events", authorization, json={"name": "user.signup"})
    assert_unauthorized(resp, authorization)


def test_intake_checks_the_key_before_the_body(srv) -> None:
    """A bad body without a key is a 401, not a 400: nothing about the body leaks to strangers."""
    resp = request(srv, "POST", "/api/v1/events", None, content=b"{not json",
                   headers={"Content-Type": "application/json"})
    assert_unauthorized(resp)


@pytest.mark.parametrize("method, path", MANAGEMENT_ROUTES)
@pytest.mark.parametrize("authorization", [None, f"Bearer {EVENT_KEY}", "Bearer at-secreX", f"Basic {API_TOKEN}"],
                         ids=["missing", "event-key", "wrong-token", "basic"])
def test_management_routes_need_an_api_token(srv, method, path, authorization) -> None:
    assert_unauthorized(request(srv, method, path, authorization), authorization)


@pytest.mark.parametrize("method, path", MANAGEMENT_ROUTES)
def test_management_routes_open_to_the_api_token(srv, method, path) -> None:
    resp = request(srv, method, path, f"Bearer {API_TOKEN}")
    assert resp.status_code in (200, 202, 404), describe(resp)
    if resp.status_code == 404:
        assert_error(resp, 404, "not_found")
    for secret in SECRETS:
        assert secret not in resp.text


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json", "/docs"])
def test_health_and_api_document_stay_public(srv, path) -> None:
    resp = request(srv, "GET", path, None)
    assert resp.status_code == 200, describe(resp)
    for secret in SECRETS:
        assert secret not in resp.text


@pytest.mark.parametrize("secret", SECRETS, ids=["event-key", "api-token"])
def test_both_secrets_open_the_intake(shared_auth_server, secret) -> None:
    server, app = shared_auth_server.server, shared_auth_server.app
    resp = request(server, "POST", "/api/v1/events", f"Bearer {secret}",
                   json={"name": "user.signup", "id": f"sent-with-{secret[:2]}"})
    assert assert_accepted(resp) == [f"sent-with-{secret[:2]}"]
    assert [r.function_id for r in app.runs_for_event(f"sent-with-{secret[:2]}")] == ["greet"]
    assert secret not in resp.text


def test_the_api_token_reads_what_the_event_key_sent(shared_auth_server) -> None:
    server, app = shared_auth_server.server, shared_auth_server.app
    resp = request(server, "POST", "/api/v1/events", f"Bearer {EVENT_KEY}", json={"name": "user.signup"})
    [event_id] = assert_accepted(resp)
    [run] = app.runs_for_event(event_id)
    resp = request(server, "GET", f"/api/v1/runs/{run.id}", f"Bearer {API_TOKEN}")
    assert resp.status_code == 200, describe(resp)
    assert resp.json()["event_id"] == event_id
    resp = request(server, "GET", "/api/v1/runs", f"Bearer {API_TOKEN}", params={"event_id": event_id})
    assert [r["id"] for r in resp.json()["runs"]] == [run.id]


def test_keys_and_tokens_from_the_environment(conveyor_app, db_url, start_server) -> None:
    """CONVEYOR_EVENT_KEYS and CONVEYOR_API_TOKENS are comma-separated lists."""
    env = clean_env(CONVEYOR_EVENT_KEYS="event-key-one,event-key-two", CONVEYOR_API_TOKENS="api-token-one")
    server = start_server(db_url, env=env)
    for key in ("event-key-one", "event-key-two", "api-token-one"):
        assert_accepted(request(server, "POST", "/api/v1/events", f"Bearer {key}", json={"name": "user.signup"}))
    assert request(server, "GET", "/api/v1/runs", "Bearer api-token-one").status_code == 200
    assert_unauthorized(request(server, "GET", "/api/v1/runs", "Bearer event-key-one"), "event-key-one")
    assert_unauthorized(request(server, "POST", "/api/v1/events", "Bearer event-key-three",
                                json={"name": "user.signup"}), "event-key-three")
    assert len(conveyor_app.app.list_runs(limit=100)) == 3
