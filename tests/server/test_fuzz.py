"""Property-based fuzzing of the live server from its own OpenAPI document (schemathesis).

Every operation of ``/openapi.json`` gets a bounded number of generated requests,
valid ones (positive mode) and invalid ones (negative mode), sent with the API token
to a server that requires keys. No request may get a 5xx, and the answers must
conform to the document (status codes, content types, response schemas).

(Schemathesis' pytest loader, ``schemathesis.pytest.from_fixture``, does not run
under pytest 9; the operations are driven through its Python API instead:
``schemathesis.openapi.from_url`` then ``operation.as_strategy()`` under Hypothesis.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

MAX_EXAMPLES = 30  # per operation and generation mode
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz(server: Any, verify: Callable[[Any], None], max_examples: int = MAX_EXAMPLES) -> tuple[list[str], int]:
    """Run ``verify(case)`` on generated cases of every operation of the server's document,
    positive and negative; returns (failures, operations run)."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=max_examples, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def run(case: Any) -> None:
                verify(case)

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to negate (no parameters)
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, report them all
                text = str(exc)
                cut = " [...]" if len(text) > 2500 else ""
                failures.append(f"{operation.label} [{mode.value}]: {text[:2500]}{cut}")
    return failures, operations


@pytest.mark.slow
def test_no_server_errors_and_conforming_answers(auth_server) -> None:
    def verify(case: Any) -> None:
        case.call_and_validate(headers=auth_server.headers(), checks=CHECKS, timeout=30)

    failures, operations = fuzz(auth_server, verify)
    assert operations >= 10, f"only {operations} operations in the document"
    assert not failures, "\n\n".join(failures)
    assert auth_server.healthy(), auth_server.stderr()


@pytest.mark.slow
def test_without_the_token_every_api_route_is_401(auth_server) -> None:
    """The same generated requests without a key: every /api/v1 route answers 401 whatever
    the input (the key is checked before the input), the public routes never a 5xx."""

    def verify(case: Any) -> None:
        resp = case.call(timeout=30)
        where = f"{case.as_curl_command()} -> {resp.status_code} {resp.text[:300]!r}"
        if case.path.startswith("/api/v1/"):
            assert resp.status_code == 401, where
        else:
            assert resp.status_code < 500, where

    failures, _ = fuzz(auth_server, verify, max_examples=10)
    assert not failures, "\n\n".join(failures)
