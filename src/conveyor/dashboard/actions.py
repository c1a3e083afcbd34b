"""What the dashboard changes: cancel, replay and redrive (POST forms with a CSRF token,
answered with a redirect back and a message), and logging in and out."""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from conveyor.dashboard.render import render
from conveyor.dashboard.session import COOKIE, safe_next, same_origin
from conveyor.dashboard.web import FLASH_COOKIE, Form, Refused, Web, flash_of, https, known, read_form
from conveyor.engine.engine import Engine
from conveyor.errors import InvalidInput

log = logging.getLogger("conveyor.dashboard")

#: Dead letters redriven by one press of "redrive all": each is its own transaction, and a
#: request should end in seconds. The page says when more remain (the API redrives any number).
REDRIVE_ALL_CAP = 500
#: Dead letters one press of "redrive selected" may name.
REDRIVE_SELECTED_CAP = 1000


class Actions:
    def __init__(self, engine: Engine, web: Web) -> None:
        self.engine = engine
        self.web = web

    def add_to(self, router: APIRouter) -> None:
        router.add_api_route("/runs/{run_id}/cancel", self.cancel, methods=["POST"])
        router.add_api_route("/runs/{run_id}/replay", self.replay, methods=["POST"])
        router.add_api_route("/dead-letters/redrive", self.redrive, methods=["POST"])

    async def cancel(self, request: Request, run_id: str) -> Response:
        def act(form: Form) -> str:
            self.engine.cancel(known(run_id, "run"))
            return f"Cancelled run {run_id}."

        return await self.web.act(request, act, f"/runs/{quote(run_id, safe='')}")

    async def replay(self, request: Request, run_id: str) -> Response:
        def act(form: Form) -> str:
            self.engine.replay(known(run_id, "run"))
            return f"Run {run_id} is queued again; it continues from the step that failed."

        return await self.web.act(request, act, f"/runs/{quote(run_id, safe='')}")

    async def redrive(self, request: Request) -> Response:
        return await self.web.act(request, self._redrive, "/dead-letters")

    def _redrive(self, form: Form) -> str:
        """One run (its row's button), the ticked ones, or all (of a function), in that order."""
        one, selected = form.get("run_id", []), form.get("selected", [])
        ids = one[:1] or selected
        if ids:
            if len(ids) > REDRIVE_SELECTED_CAP:
                raise InvalidInput(f"select at most {REDRIVE_SELECTED_CAP:,} dead letters at once")
            done = self.engine.redrive([known(i, "run") for i in ids])  # all of them, or none
            return f"Redrove run {done[0]}." if len(done) == 1 else f"Redrove {_plural(len(done), 'dead letter')}."
        if form.get("all") == ["1"]:
            function = (form.get("function") or [""])[0].strip() or None
            ids = self.engine.dead_letter_ids(function, limit=REDRIVE_ALL_CAP)
            done = self.engine.redrive_any(ids)  # those still failed: another hand may have been faster
            more = " More remain: press again." if len(ids) == REDRIVE_ALL_CAP else ""
            return f"Redrove {_plural(len(done), 'dead letter')}.{more}"
        raise InvalidInput("choose the dead letters to redrive")


class Login:
    """``/login`` (the form, then an API token for a session cookie) and ``/logout``."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.sessions = web.sessions

    def add_to(self, router: APIRouter) -> None:
        router.add_api_route("/login", self.form, methods=["GET"])
        router.add_api_route("/login", self.login, methods=["POST"])
        router.add_api_route("/logout", self.logout, methods=["POST"])

    async def form(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if not self.sessions.required or self.web.current(request) is not None:
            return RedirectResponse(target, status_code=303)
        context = self.web.context(request, None, target=target, problem=None, flash=flash_of(request))
        response = render("login.html", context)
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="strict", secure=https(request))
        return response

    async def login(self, request: Request) -> Response:
        if not self.sessions.required:
            return RedirectResponse("/", status_code=303)
        try:
            if not same_origin(request.headers):  # no one else's page logs a browser in
                raise Refused(403, "Log in from this dashboard's own login page.")
            form = await read_form(request)
        except Refused as exc:
            return self.web.error(request, None, exc)
        target = safe_next((form.get("next") or ["/"])[0])
        key = self.sessions.token_key((form.get("token") or [""])[0].strip())
        if key is None:
            log.info("dashboard: a login with a wrong token was refused")
            problem = "That is not an API token of this server."
            return render("login.html", self.web.context(request, None, target=target, problem=problem), status=401)
        response = RedirectResponse(target, status_code=303)
        self.web.set_session(request, response, self.sessions.open(key))
        return response

    async def logout(self, request: Request) -> Response:
        response = await self.web.act(request, lambda form: "You are logged out.", "/login")
        if 300 <= response.status_code < 400:
            response.delete_cookie(COOKIE, path="/", secure=https(request), httponly=True, samesite="strict")
        return response


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")
