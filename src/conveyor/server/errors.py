"""Every error leaves the server as ``{"error": {"code": ..., "message": ...}}``.

Conveyor's own errors carry a stable ``code``; this module maps codes to HTTP
statuses. The caller's mistakes are 4xx; an unexpected failure is logged with its
traceback and answered 500 without details.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from conveyor.errors import ConveyorError

log = logging.getLogger("conveyor.server")

STATUS_BY_CODE = {
    "invalid_json": 400,
    "invalid_query": 400,
    "invalid_input": 422,
    "not_serializable": 422,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_state": 409,
    "too_large": 413,
    "overloaded": 429,
    "config_error": 422,
    "database_unavailable": 503,
}
CODE_BY_STATUS = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 409: "invalid_state", 413: "too_large", 415: "unsupported_media_type",
    422: "invalid_input", 429: "overloaded", 431: "headers_too_large", 503: "unavailable",
}


class ApiError(Exception):
    """An error answered as is: ``status``, ``code``, ``message`` and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def conveyor_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ConveyorError)
        status = STATUS_BY_CODE.get(exc.code, 400)
        headers = {"Retry-After": "1"} if status == 503 else None
        if status == 503:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, exc.code, str(exc), headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = CODE_BY_STATUS.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        """400 for a malformed body or a bad query or path parameter; 422 for a body of the
        wrong shape (as API.md draws the line)."""
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        in_body = [e for e in errors if tuple(e.get("loc", ()))[:1] == ("body",)]
        if any(e.get("type") == "json_invalid" for e in in_body):
            return error_response(400, "invalid_json", describe(in_body))
        if in_body:
            return error_response(422, "invalid_input", describe(in_body))
        return error_response(400, "invalid_query", describe(errors))

    async def client_gone(request: Request, exc: Exception) -> Response:
        """The client hung up before its body was read: nothing to answer, nothing went wrong here."""
        log.debug("%s %s: the client disconnected before sending its whole body", request.method, request.url.path)
        return Response(status_code=400)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "the server failed unexpectedly; see its log")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ConveyorError, conveyor_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, unexpected)


def describe(errors: Any) -> str:
    """Pydantic's error list as one line: ``query.limit: Input should be a valid integer``."""
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"
