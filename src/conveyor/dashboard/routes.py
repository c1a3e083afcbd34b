"""The dashboard's routes: pages (GET), actions (POST with a CSRF token), login and logout.

:func:`create_router` builds a router the server includes; none of its routes is in
the OpenAPI document. Pages read through :class:`~conveyor.dashboard.pages.Pages` in a
worker thread (the engine blocks); a page asked for with ``X-Conveyor-Partial: 1``
answers only its live fragment. Bad input is a 4xx page, never a 5xx; GETs never
change anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from conveyor.dashboard import params
from conveyor.dashboard.pages import Pages
from conveyor.dashboard.render import PARTIAL_HEADER, asset, render
from conveyor.dashboard.session import COOKIE, Session, Sessions, safe_next, same_origin
from conveyor.engine.engine import Engine
from conveyor.errors import ConveyorError, DatabaseUnavailable, InvalidInput, InvalidState, NotFound

log = logging.getLogger("conveyor.dashboard")

FLASH_COOKIE = "conveyor_flash"
MAX_FORM_BYTES = 64 * 1024
#: Dead letters redriven by one press of "redrive all": each is its own transaction, and a
#: request should end in seconds. The page says when more remain (the API redrives any number).
REDRIVE_ALL_CAP = 500
_STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}


class Refused(Exception):
    """A request the dashboard answers with an error page (``status``, ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_router(engine: Engine, *, api_tokens: Sequence[str], auth: bool) -> APIRouter:
    """The dashboard over ``engine``. With ``auth`` (the server has keys configured) every page
    needs a session opened with one of ``api_tokens``, or that token as a bearer header."""
    return Dashboard(engine, Sessions(api_tokens, required=auth)).router


class Dashboard:
    def __init__(self, engine: Engine, sessions: Sessions) -> None:
        self.pages = Pages(engine)
        self.engine = engine
        self.sessions = sessions
        r = self.router = APIRouter(include_in_schema=False)
        r.add_api_route("/", self.functions, methods=["GET"])
        r.add_api_route("/runs", self.runs, methods=["GET"])
        r.add_api_route("/runs/{run_id}/cancel", self.cancel, methods=["POST"])
        r.add_api_route("/runs/{run_id}/replay", self.replay, methods=["POST"])
        r.add_api_route("/runs/{run_id:path}", self.run, methods=["GET"])
        r.add_api_route("/events", self.events, methods=["GET"])
        r.add_api_route("/events/{event_id:path}", self.event, methods=["GET"])
        r.add_api_route("/dead-letters", self.dead_letters, methods=["GET"])
        r.add_api_route("/dead-letters/redrive", self.redrive, methods=["POST"])
        r.add_api_route("/pools", self.pools, methods=["GET"])
        r.add_api_route("/search", self.search, methods=["GET"])
        r.add_api_route("/login", self.login_form, methods=["GET"])
        r.add_api_route("/login", self.login, methods=["POST"])
        r.add_api_route("/logout", self.logout, methods=["POST"])
        r.add_api_route("/static/{name}", self.static, methods=["GET"])

    # ---- pages ------------------------------------------------------------------------------------

    async def functions(self, request: Request) -> Response:
        return await self._page(request, "functions.html", "functions", lambda now: self.pages.functions())

    async def runs(self, request: Request) -> Response:
        def load(now: float) -> dict[str, Any]:
            query = params.run_query(request.query_params)
            return {"query": query, "page": self.pages.runs(query, now), "function_ids": self.pages.function_ids()}

        return await self._page(request, "runs.html", "runs", load, on_bad=self._runs_bad_input)

    def _runs_bad_input(self, request: Request, message: str) -> dict[str, Any]:
        """The runs page with its filters as given, no rows, and the problem said above them."""
        raw = {k: v[:params.MAX_TEXT] for k, v in request.query_params.items()}
        query = params.RunQuery(**{k: raw.get(k) for k in ("function", "status", "event", "parent", "window",
                                                            "since", "until", "children")})
        return {"query": query, "page": None, "function_ids": self.pages.function_ids(), "problem": message}

    async def run(self, request: Request, run_id: str) -> Response:
        return await self._page(request, "run.html", "runs", lambda now: self.pages.run(_known(run_id, "run"), now))

    async def events(self, request: Request) -> Response:
        def load(now: float) -> dict[str, Any]:
            q = request.query_params
            name = params.text(q, "name")
            cursor = params.event_cursor(params.text(q, "cursor", limit=700))
            internal = params.flag(q, "internal") is not None or (name or "").startswith("conveyor/")
            return {"name": name, "internal": internal, "first": cursor is None,
                    "page": self.pages.events(name, cursor, internal=internal)}

        return await self._page(request, "events.html", "events", load)

    async def event(self, request: Request, event_id: str) -> Response:
        return await self._page(request, "event.html", "events",
                                lambda now: self.pages.event(_known(event_id, "event")))

    async def dead_letters(self, request: Request) -> Response:
        def load(now: float) -> dict[str, Any]:
            q = request.query_params
            function, cursor = params.text(q, "function"), params.cursor(q)
            return {"function": function, "page": self.pages.dead_letters(function, cursor), "first": cursor is None,
                    "function_ids": self.pages.function_ids(), "cap": REDRIVE_ALL_CAP}

        return await self._page(request, "dead_letters.html", "dead-letters", load)

    async def pools(self, request: Request) -> Response:
        return await self._page(request, "pools.html", "pools", lambda now: {"pools": self.pages.pools(now)})

    async def search(self, request: Request) -> Response:
        session = self._session(request)
        if isinstance(session, Response):
            return session
        try:
            ident = params.text(request.query_params, "q", limit=600)
        except params.BadInput as exc:
            return self._error(request, session, Refused(400, str(exc)))
        if ident is None:
            return RedirectResponse("/runs", status_code=303)
        try:
            found = await asyncio.to_thread(self.pages.find, ident)
        except ConveyorError as exc:
            return self._error(request, session, _refusal(exc))
        if found is None:
            return self._error(request, session, Refused(404, f"No run or event has the id “{ident}”."),
                               title="Not found", query=ident)
        return RedirectResponse(found, status_code=303)

    # ---- actions ----------------------------------------------------------------------------------

    async def cancel(self, request: Request, run_id: str) -> Response:
        return await self._act(request, lambda form: self._cancel(run_id), f"/runs/{quote(run_id, safe='')}")

    def _cancel(self, run_id: str) -> str:
        self.engine.cancel(_known(run_id, "run"))
        return f"Cancelled run {run_id}."

    async def replay(self, request: Request, run_id: str) -> Response:
        return await self._act(request, lambda form: self._replay(run_id), f"/runs/{quote(run_id, safe='')}")

    def _replay(self, run_id: str) -> str:
        self.engine.replay(_known(run_id, "run"))
        return f"Run {run_id} is queued again; it continues from the step that failed."

    async def redrive(self, request: Request) -> Response:
        return await self._act(request, self._redrive, "/dead-letters")

    def _redrive(self, form: dict[str, list[str]]) -> str:
        one, selected = form.get("run_id", []), form.get("selected", [])
        ids = one[:1] or selected
        if ids:
            if len(ids) > 1000:
                raise InvalidInput("select at most 1,000 dead letters at once")
            done = self.engine.redrive([_known(i, "run") for i in ids])
            return f"Redrove {_plural(len(done), 'dead letter')}." if len(done) != 1 else f"Redrove run {done[0]}."
        if form.get("all") == ["1"]:
            function = (form.get("function") or [""])[0].strip() or None
            ids = self.engine.dead_letter_ids(function, limit=REDRIVE_ALL_CAP)
            done = self.engine.redrive_any(ids)
            more = " More remain: press again." if len(ids) == REDRIVE_ALL_CAP else ""
            return f"Redrove {_plural(len(done), 'dead letter')}.{more}"
        raise InvalidInput("choose the dead letters to redrive")

    async def _act(self, request: Request, act: Callable[[dict[str, list[str]]], str], back: str) -> Response:
        """An action: a session, a same-origin request, a valid CSRF token; then ``act`` in a thread,
        and a redirect back to the page it came from with its result."""
        session = self._current(request)
        if session is None and self.sessions.required:
            return self._login_first(request)
        try:
            if session is None:
                raise Refused(403, "This action needs the dashboard's session cookie: reload the page and retry.")
            if not same_origin(request.headers):
                raise Refused(403, "This action must be sent from a page of this dashboard.")
            form = await _form(request)
            if not self.sessions.check_csrf(session, (form.get("csrf") or [""])[0]):
                raise Refused(403, "The form is out of date or was not sent by this dashboard: reload the page.")
        except Refused as exc:
            return self._error(request, session, exc)
        to = safe_next((form.get("back") or [back])[0])
        try:
            message = await asyncio.to_thread(act, form)
        except (InvalidInput, InvalidState) as exc:
            return _redirect(to, ("error", str(exc)))
        except ConveyorError as exc:
            return self._error(request, session, _refusal(exc))
        return _redirect(to, ("ok", message))

    # ---- login ------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if not self.sessions.required:
            return RedirectResponse(target, status_code=303)
        if self._current(request) is not None:
            return RedirectResponse(target, status_code=303)
        response = render("login.html", self._context(request, None, target=target, problem=None,
                                                      flash=_flash(request)))
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
        return response

    async def login(self, request: Request) -> Response:
        if not self.sessions.required:
            return RedirectResponse("/", status_code=303)
        try:
            if not same_origin(request.headers):
                raise Refused(403, "Log in from this dashboard's own login page.")
            form = await _form(request)
        except Refused as exc:
            return self._error(request, None, exc)
        target = safe_next((form.get("next") or ["/"])[0])
        key = self.sessions.token_key((form.get("token") or [""])[0].strip())
        if key is None:
            log.info("dashboard: a login with a wrong token was refused")
            problem = "That is not an API token of this server."
            return render("login.html", self._context(request, None, target=target, problem=problem), status=401)
        response = RedirectResponse(target, status_code=303)
        self._set_session(request, response, self.sessions.open(key))
        return response

    async def logout(self, request: Request) -> Response:
        response = await self._act(request, lambda form: "You are logged out.", "/login")
        if 300 <= response.status_code < 400:
            response.delete_cookie(COOKIE, path="/", secure=_https(request), httponly=True, samesite="strict")
        return response

    # ---- static files -----------------------------------------------------------------------------

    async def static(self, request: Request, name: str) -> Response:
        kind = name.rpartition(".")[2]
        if kind not in _STATIC_TYPES or "/" in name or name.startswith("."):
            return Response("not found", status_code=404, media_type="text/plain")
        try:
            data, version = asset(name)
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return Response("not found", status_code=404, media_type="text/plain")
        cache = "public, max-age=31536000, immutable" if request.query_params.get("v") == version else "no-cache"
        return Response(data, media_type=_STATIC_TYPES[kind],
                        headers={"Cache-Control": cache, "ETag": f'"{version}"', "X-Content-Type-Options": "nosniff"})

    # ---- the machinery of a page ------------------------------------------------------------------

    async def _page(self, request: Request, template: str, nav: str, load: Callable[[float], dict[str, Any]],
                    on_bad: Callable[[Request, str], dict[str, Any]] | None = None) -> Response:
        session = self._session(request)
        if isinstance(session, Response):
            return session
        partial = request.headers.get(PARTIAL_HEADER) == "1"
        status = 200
        try:
            def read() -> tuple[float, dict[str, Any]]:
                now = self.pages.now()
                return now, load(now)

            now, data = await asyncio.to_thread(read)
        except params.BadInput as exc:
            if on_bad is None:
                return self._error(request, session, Refused(400, str(exc)))
            now, data, status = 0.0, await asyncio.to_thread(on_bad, request, str(exc)), 400
        except ConveyorError as exc:
            return self._error(request, session, _refusal(exc))
        context = self._context(request, session, nav=nav, now=now or _wall(), **data)
        flash = None if partial else _flash(request)
        context["flash"] = flash
        response = render(template, context, partial=partial, status=status)
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict", secure=_https(request))
        if session.cookie is not None:
            self._set_session(request, response, session)
        return response

    def _current(self, request: Request) -> Session | None:
        return (self.sessions.from_bearer(request.headers.get("authorization"))
                or self.sessions.from_cookie(request.cookies.get(COOKIE)))

    def _session(self, request: Request) -> Session | Response:
        """The request's session; without one, the way to get one (the login page), or on an
        open server a new anonymous session."""
        session = self._current(request)
        if session is not None:
            return session
        if not self.sessions.required:
            return self.sessions.open()
        return self._login_first(request)

    def _login_first(self, request: Request) -> Response:
        if request.headers.get(PARTIAL_HEADER) == "1" or request.method != "GET":
            return render("error.html", self._context(request, None, status=401, title="Log in",
                                                      message="Your session has ended: log in again."), status=401)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": path}), status_code=303)

    def _set_session(self, request: Request, response: Response, session: Session) -> None:
        assert session.cookie is not None
        response.set_cookie(COOKIE, session.cookie, max_age=int(self.sessions.ttl), path="/", httponly=True,
                            samesite="strict", secure=_https(request))

    def _context(self, request: Request, session: Session | None, **extra: Any) -> dict[str, Any]:
        return {
            "session": session,
            "csrf": self.sessions.csrf(session) if session is not None else "",
            "auth": self.sessions.required,
            "path": request.url.path,
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            "nav": None, "now": _wall(), "flash": None, "query_text": "", "can_login": self.sessions.can_login,
            **extra,
        }

    def _error(self, request: Request, session: Session | None, exc: Refused, *, title: str | None = None,
               query: str = "") -> Response:
        titles = {400: "Bad request", 401: "Log in", 403: "Forbidden", 404: "Not found", 409: "Conflict",
                  413: "Too large", 415: "Unsupported form",
                  503: "Database unavailable"}
        context = self._context(request, session, status=exc.status, message=exc.message,
                                title=title or titles.get(exc.status, "Error"), query_text=query)
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        response = render("error.html", context, status=exc.status, headers=headers,
                          partial=request.headers.get(PARTIAL_HEADER) == "1")
        if session is not None and session.cookie is not None:
            self._set_session(request, response, session)
        return response


# ---- helpers ---------------------------------------------------------------------------------------


def _known(ident: str, what: str) -> str:
    """``ident`` if a run or event could have it; otherwise the 404 it is."""
    if params.ident(ident) is None:
        raise NotFound(f"no {what} with this id")
    return ident


def _refusal(exc: ConveyorError) -> Refused:
    if isinstance(exc, NotFound):
        return Refused(404, str(exc))
    if isinstance(exc, InvalidState):
        return Refused(409, str(exc))
    if isinstance(exc, DatabaseUnavailable):
        log.warning("dashboard: %s", exc)
        return Refused(503, "The database does not answer right now; the page retries by itself.")
    return Refused(400, str(exc))


async def _form(request: Request) -> dict[str, list[str]]:
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


def _redirect(to: str, flash: tuple[str, str]) -> Response:
    response = RedirectResponse(to, status_code=303, headers={"Cache-Control": "no-store"})
    value = quote(f"{flash[0]}:{flash[1][:400]}", safe="")
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path="/", httponly=True, samesite="strict")
    return response


def _flash(request: Request) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    kind, _, message = unquote(raw)[:500].partition(":")
    return (kind if kind in ("ok", "error") else "ok", message) if message else None


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _wall() -> float:
    return time.time()

