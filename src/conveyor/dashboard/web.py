"""The machinery every dashboard route shares: who is asking (a session, or the way to the
login page), the context a template gets, error pages, and the life of a form.

:class:`Web` answers pages (read in a worker thread: the engine blocks; only the live
fragment when asked with ``X-Conveyor-Partial: 1``) and actions (a session, a same-origin
request and a valid CSRF token first; then a redirect back with a one-time message).
Bad input is a 4xx page, never a 5xx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from fastapi import Request
from starlette.responses import RedirectResponse, Response

from conveyor.dashboard import params
from conveyor.dashboard.pages import Pages
from conveyor.dashboard.render import PARTIAL_HEADER, render
from conveyor.dashboard.session import COOKIE, Session, Sessions, safe_next, same_origin
from conveyor.errors import ConveyorError, DatabaseUnavailable, InvalidInput, InvalidState, NotFound

log = logging.getLogger("conveyor.dashboard")

FLASH_COOKIE = "conveyor_flash"
MAX_FORM_BYTES = 64 * 1024
TITLES = {400: "Bad request", 401: "Log in", 403: "Forbidden", 404: "Not found", 409: "Conflict", 413: "Too large",
          415: "Unsupported form", 503: "Database unavailable"}

Form = dict[str, list[str]]


class Refused(Exception):
    """A request the dashboard answers with an error page (``status``, ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Web:
    def __init__(self, pages: Pages, sessions: Sessions) -> None:
        self.pages = pages
        self.sessions = sessions

    async def page(self, request: Request, template: str, nav: str, load: Callable[[float], dict[str, Any]],
                   on_bad: Callable[[Request, str], dict[str, Any]] | None = None) -> Response:
        session = self.session(request)
        if isinstance(session, Response):
            return session
        partial = is_partial(request)
        status = 200
        try:
            def read() -> tuple[float, dict[str, Any]]:
                now = self.pages.now()
                return now, load(now)

            now, data = await asyncio.to_thread(read)
        except params.BadInput as exc:
            if on_bad is None:
                return self.error(request, session, Refused(400, str(exc)))
            now, data, status = 0.0, await asyncio.to_thread(on_bad, request, str(exc)), 400
        except ConveyorError as exc:
            return self.error(request, session, refusal(exc))
        context = self.context(request, session, nav=nav, now=now or _wall(), **data)
        flash = None if partial else flash_of(request)
        context["flash"] = flash
        response = render(template, context, partial=partial, status=status)
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict", secure=https(request))
        if session.cookie is not None:
            self.set_session(request, response, session)
        return response

    def current(self, request: Request) -> Session | None:
        return (self.sessions.from_bearer(request.headers.get("authorization"))
                or self.sessions.from_cookie(request.cookies.get(COOKIE)))

    def session(self, request: Request) -> Session | Response:
        """The request's session; without one, the way to get one (the login page), or on an
        open server a new anonymous session."""
        session = self.current(request)
        if session is not None:
            return session
        if not self.sessions.required:
            return self.sessions.open()
        return self.login_first(request)

    def login_first(self, request: Request) -> Response:
        if is_partial(request) or request.method != "GET":
            return render("error.html", self.context(request, None, status=401, title="Log in",
                                                      message="Your session has ended: log in again."), status=401)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": path}), status_code=303)

    def set_session(self, request: Request, response: Response, session: Session) -> None:
        assert session.cookie is not None
        response.set_cookie(COOKIE, session.cookie, max_age=int(self.sessions.ttl), path="/", httponly=True,
                            samesite="strict", secure=https(request))

    def context(self, request: Request, session: Session | None, **extra: Any) -> dict[str, Any]:
        return {
            "session": session,
            "csrf": self.sessions.csrf(session) if session is not None else "",
            "auth": self.sessions.required,
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "nav": None, "now": _wall(), "flash": None, "query_text": "", "can_login": self.sessions.can_login,
            **extra,
        }

    def error(self, request: Request, session: Session | None, exc: Refused, *, title: str | None = None,
               query: str = "") -> Response:
        context = self.context(request, session, status=exc.status, message=exc.message,
                                title=title or TITLES.get(exc.status, "Error"), query_text=query)
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        response = render("error.html", context, status=exc.status, headers=headers,
                          partial=is_partial(request))
        if session is not None and session.cookie is not None:
            self.set_session(request, response, session)
        return response

    async def act(self, request: Request, act: Callable[[Form], str], back: str) -> Response:
        """An action: a session, a same-origin request, a valid CSRF token; then ``act`` in a thread,
        and a redirect back to the page it came from with its result."""
        session = self.current(request)
        if session is None and self.sessions.required:
            return self.login_first(request)
        try:
            if session is None:
                raise Refused(403, "This action needs the dashboard's session cookie: reload the page and retry.")
            if not same_origin(request.headers):
                raise Refused(403, "This action must be sent from a page of this dashboard.")
            form = await read_form(request)
            if not self.sessions.check_csrf(session, (form.get("csrf") or [""])[0]):
                raise Refused(403, "The form is out of date or was not sent by this dashboard: reload the page.")
        except Refused as exc:
            return self.error(request, session, exc)
        to = safe_next((form.get("back") or [back])[0])
        try:
            message = await asyncio.to_thread(act, form)
        except (InvalidInput, InvalidState) as exc:
            return redirect_with(request, to, ("error", str(exc)))
        except ConveyorError as exc:
            return self.error(request, session, refusal(exc))
        return redirect_with(request, to, ("ok", message))


# ---- helpers ---------------------------------------------------------------------------------------


def known(ident: str, what: str) -> str:
    """``ident`` if a run or event could have it; otherwise the 404 it is."""
    if params.ident(ident) is None:
        raise NotFound(f"no {what} with this id")
    return ident


def refusal(exc: ConveyorError) -> Refused:
    if isinstance(exc, NotFound):
        return Refused(404, str(exc))
    if isinstance(exc, InvalidState):
        return Refused(409, str(exc))
    if isinstance(exc, DatabaseUnavailable):
        log.warning("dashboard: %s", exc)
        return Refused(503, "The database does not answer right now; the page retries by itself.")
    return Refused(400, str(exc))


async def read_form(request: Request) -> Form:
    """An urlencoded form body (an empty body is an empty form), at most :data:`MAX_FORM_BYTES`."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, "The form is too large.")
    if not body:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise Refused(415, "Send the form as application/x-www-form-urlencoded.")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "The form is not valid.") from None


def redirect_with(request: Request, to: str, flash: tuple[str, str]) -> Response:
    """A redirect to ``to`` (after a POST: 303), with a message for the next page it shows."""
    response = RedirectResponse(to, status_code=303, headers={"Cache-Control": "no-store"})
    value = quote(f"{flash[0]}:{flash[1][:400]}", safe="")
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path="/", httponly=True, samesite="strict",
                        secure=https(request))
    return response


def flash_of(request: Request) -> tuple[str, str] | None:
    """The message an action left for this page (``ok`` or ``error``), if any."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, message = unquote(raw)[:500].partition(":")
    return (kind if kind in ("ok", "error") else "ok", message) if message else None


def is_partial(request: Request) -> bool:
    """Whether the page's script asks for its live block only (a refresh): the page's header,
    and what only the header shows, is not rendered."""
    return request.headers.get(PARTIAL_HEADER) == "1"


def https(request: Request) -> bool:
    return request.url.scheme == "https"


def _wall() -> float:
    return time.time()


