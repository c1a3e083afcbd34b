"""``conveyor endpoints register|list|remove`` against a real server, in-process (``main(argv)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.cli.main import main

from .harness import API_TOKEN

APP = f"{Path(__file__).with_name('cli_app.py')}:app"


@pytest.mark.backends("sqlite")
def test_register_list_and_remove(make_push_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    env = make_push_env()
    url = env.url("live")
    auth = ["--server", env.server.url, "--api-token", API_TOKEN]
    assert main(["endpoints", "register", APP, "--url", url, "--pool", "live", "--concurrency", "3",
                 "--rate", "50", "--timeout", "20", *auth]) == 0
    assert f"registered {url}" in capsys.readouterr().out
    assert main(["endpoints", "list", "--json", *auth]) == 0
    [endpoint] = json.loads(capsys.readouterr().out)
    assert (endpoint["url"], endpoint["pool"], endpoint["concurrency"], endpoint["rate"], endpoint["timeout"]) == (
        url, "live", 3, 50.0, 20.0)
    assert "three" in endpoint["functions"] and "fragile/on-failure" in endpoint["functions"]
    run = env.wait(env.send("push.three", {"key": "cli"}))  # the registered endpoint serves it
    assert run.status == "completed"
    assert main(["endpoints", "list", *auth]) == 0
    assert url in capsys.readouterr().out
    assert main(["endpoints", "remove", url, *auth]) == 0
    assert main(["endpoints", "remove", url, *auth]) == 1
    assert "no endpoint is registered" in capsys.readouterr().err


@pytest.mark.backends("sqlite")
def test_a_wrong_token_or_a_missing_pool_is_an_error(make_push_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    env = make_push_env()
    url = env.url("live")
    assert main(["endpoints", "register", APP, "--url", url, "--pool", "live", "--server", env.server.url,
                 "--api-token", "wrong-token-123"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "wrong-token-123" not in err
    assert main(["endpoints", "register", APP, "--url", url, "--server", env.server.url, "--api-token",
                 API_TOKEN]) == 0  # one pool among its functions: no --pool needed
    assert main(["endpoints", "register", APP, "--url", "ftp://x", "--server", env.server.url]) == 1
    assert "http://" in capsys.readouterr().err
