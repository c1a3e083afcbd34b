"""The push routes of the server: registration (API token, error shapes) and the signed view."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from conveyor.push import protocol
from conveyor.push.signing import HEADER, Verifier, sign

from .conftest import PushEnv
from .harness import API_TOKEN, KEY

pytestmark = pytest.mark.backends("sqlite")
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SPEC = {"id": "f", "pool": "live", "triggers": ["go"], "retries": 1}


def error_of(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


def test_registration_needs_a_token_and_a_well_formed_document(make_push_env: Any) -> None:
    env: PushEnv = make_push_env()
    url = env.server.url + "/api/v1/endpoints"
    doc = {"url": "http://127.0.0.1:1/x/", "pool": "live", "functions": [SPEC]}
    assert error_of(httpx.post(url, json=doc), 401) == "unauthorized"
    assert error_of(httpx.post(url, content=b"{nope", headers=AUTH), 400) == "invalid_json"
    for bad in ({**doc, "url": "ftp://x"}, {**doc, "functions": []}, {**doc, "concurrency": 0},
                {**doc, "extra": 1}, {**doc, "functions": [{**SPEC, "id": "a/b"}]}, [doc]):
        assert error_of(httpx.post(url, json=bad, headers=AUTH), 422) == "invalid_input", bad
    reply = httpx.post(url, json={**doc, "concurrency": 4, "rate": 2.5}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["functions"], reply.json()["concurrency"], reply.json()["rate"]) == (["f"], 4, 2.5)
    assert [e["url"] for e in httpx.get(url, headers=AUTH).json()["endpoints"]] == [doc["url"]]
    assert httpx.delete(url, params={"url": doc["url"]}, headers=AUTH).status_code == 200
    assert error_of(httpx.delete(url, params={"url": doc["url"]}, headers=AUTH), 404) == "not_found"


def view(env: PushEnv, doc: dict[str, Any], key: str = KEY, request_id: str | None = None) -> httpx.Response:
    body = protocol.encode(doc)
    rid = request_id or f"v{time.monotonic_ns()}"
    return httpx.post(env.server.url + "/api/v1/push/view", content=body,
                      headers={HEADER: sign(body, [key], request_id=rid)})


def test_the_view_answers_signed_reads_only(make_push_env: Any) -> None:
    env: PushEnv = make_push_env()
    env.register("live")
    reply = view(env, {"op": "function_exists", "function_id": "three"}, request_id="view-1")
    assert reply.status_code == 200, reply.text
    Verifier([KEY], replay_guard=False).verify(reply.headers[HEADER], reply.content, request_id="view-1")
    assert protocol.decode(reply.content)["exists"] is True
    assert protocol.decode(view(env, {"op": "function_exists", "function_id": "nope"}).content)["exists"] is False
    outputs = view(env, {"op": "children_outputs", "run_id": "r", "step_id": "s", "offset": 0, "limit": 5})
    assert protocol.decode(outputs.content)["outputs"] == []
    assert error_of(view(env, {"op": "function_exists", "function_id": "three"}, key="x" * 32), 401) == "unauthorized"
    assert error_of(view(env, {"op": "function_exists", "function_id": "three"}, request_id="view-1"), 401)
    unsigned = httpx.post(env.server.url + "/api/v1/push/view", content=protocol.encode({"op": "function_exists"}))
    assert error_of(unsigned, 401) == "unauthorized"
    assert error_of(view(env, {"op": "drop_tables"}), 422) == "invalid_input"
    assert error_of(view(env, {"op": "child_error", "run_id": "r", "step_id": "s", "index": -1}), 422)
