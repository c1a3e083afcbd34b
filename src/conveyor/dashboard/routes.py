"""The dashboard's router: its pages (GET, which never change anything), the actions and
login of :mod:`~conveyor.dashboard.actions`, and its static files.

:func:`create_router` builds the router the server includes; none of its routes is in
the OpenAPI document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from conveyor.dashboard import params
from conveyor.dashboard.actions import REDRIVE_ALL_CAP, Actions, Login
from conveyor.dashboard.pages import Pages
from conveyor.dashboard.render import asset
from conveyor.dashboard.session import Sessions
from conveyor.dashboard.web import Refused, Web, is_partial, known, refusal
from conveyor.engine.engine import Engine
from conveyor.errors import ConveyorError

_STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8", "svg": "image/svg+xml"}
_RUN_FILTERS = ("function", "status", "event", "parent", "window", "since", "until", "children")


def create_router(engine: Engine, *, api_tokens: Sequence[str], auth: bool) -> APIRouter:
    """The dashboard over ``engine``. With ``auth`` (the server has keys configured) every page
    needs a session opened with one of ``api_tokens``, or that token as a bearer header."""
    web = Web(Pages(engine), Sessions(api_tokens, required=auth))
    router = APIRouter(include_in_schema=False)
    PageRoutes(web).add_to(router)
    Actions(engine, web).add_to(router)
    Login(web).add_to(router)
    return router


class PageRoutes:
    def __init__(self, web: Web) -> None:
        self.web = web
        self.pages = web.pages

    def add_to(self, router: APIRouter) -> None:
        router.add_api_route("/", self.functions, methods=["GET"])
        router.add_api_route("/runs", self.runs, methods=["GET"])
        router.add_api_route("/runs/{run_id:path}", self.run, methods=["GET"])
        router.add_api_route("/events", self.events, methods=["GET"])
        router.add_api_route("/events/{event_id:path}", self.event, methods=["GET"])
        router.add_api_route("/dead-letters", self.dead_letters, methods=["GET"])
        router.add_api_route("/pools", self.pools, methods=["GET"])
        router.add_api_route("/search", self.search, methods=["GET"])
        router.add_api_route("/static/{name}", self.static, methods=["GET"])

    async def functions(self, request: Request) -> Response:
        return await self.web.page(request, "functions.html", "functions", lambda now: self.pages.functions())

    async def runs(self, request: Request) -> Response:
        def load(now: float) -> dict[str, Any]:
            query = params.run_query(request.query_params)
            return {"query": query, "page": self.pages.runs(query, now), **self._header(request)}

        return await self.web.page(request, "runs.html", "runs", load, on_bad=self._runs_bad_input)

    def _runs_bad_input(self, request: Request, message: str) -> dict[str, Any]:
        """The runs page with its filters as given, no rows, and the problem said above them."""
        given = {k: request.query_params.get(k, "")[:params.MAX_TEXT] or None for k in _RUN_FILTERS}
        return {"query": params.RunQuery(**given), "page": None, "problem": message, **self._header(request)}

    def _header(self, request: Request) -> dict[str, Any]:
        """What the header's filters need: the function ids of its <select>; nothing for a live
        refresh, which renders only the live block."""
        return {} if is_partial(request) else {"function_ids": self.pages.function_ids()}

    async def run(self, request: Request, run_id: str) -> Response:
        return await self.web.page(request, "run.html", "runs", lambda now: self.pages.run(known(run_id, "run"), now))

    async def events(self, request: Request) -> Response:
        def load(now: float) -> dict[str, Any]:
            q = request.query_params
            name = params.text(q, "name")
            cursor = params.event_cursor(params.text(q, "cursor", limit=700))
            internal = params.flag(q, "internal") is not None
            return {"name": name, "internal": internal, "first": cursor is None,
                    "page": self.pages.events(name, cursor, internal=internal)}

        return await self.web.page(request, "events.html", "events", load)

    async def event(self, request: Request, event_id: str) -> Response:
        return await self.web.page(request, "event.html", "events",
                                   lambda now: self.pages.event(known(event_id, "event")))

    async def dead_letters(self, request: Request) -> Response:
        def load(now: float) -> dict[str, Any]:
            q = request.query_params
            function, cursor = params.text(q, "function"), params.cursor(q)
            return {"function": function, "page": self.pages.dead_letters(function, cursor), "first": cursor is None,
                    "cap": REDRIVE_ALL_CAP, **self._header(request)}

        return await self.web.page(request, "dead_letters.html", "dead-letters", load)

    async def pools(self, request: Request) -> Response:
        return await self.web.page(request, "pools.html", "pools", lambda now: {"pools": self.pages.pools(now)})

    async def search(self, request: Request) -> Response:
        """A run or an event, by id: a redirect to its page, or a 404 page that says so."""
        session = self.web.session(request)
        if isinstance(session, Response):
            return session
        try:
            ident = params.text(request.query_params, "q", limit=600)
        except params.BadInput as exc:
            return self.web.error(request, session, Refused(400, str(exc)))
        if ident is None:
            return RedirectResponse("/runs", status_code=303)
        try:
            found = await asyncio.to_thread(self.pages.find, ident)
        except ConveyorError as exc:
            return self.web.error(request, session, refusal(exc))
        if found is None:
            return self.web.error(request, session, Refused(404, f"No run or event has the id “{ident}”."),
                                  query=ident)
        return RedirectResponse(found, status_code=303)

    async def static(self, request: Request, name: str) -> Response:
        """The stylesheet, the script and the icon; cached for good when asked by content hash."""
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
