"""Templates to responses: the Jinja environment (autoescaped), whole pages and live fragments.

A page's template extends ``base.html`` and puts everything that changes over time
in its ``live`` block. A request with ``X-Conveyor-Partial: 1`` (the page's script,
every few seconds) gets only that block, rendered with the same data, so the page
updates in place without a reload.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from conveyor.dashboard import format as fmt
from conveyor.dashboard.params import STATUSES, WINDOWS, page_link

PARTIAL_HEADER = "x-conveyor-partial"
MACROS = ("badge", "when", "run_link", "json_block", "error_block", "run_table", "pager", "function_select")
#: Every dashboard response: no caching of live data, no framing (the actions are buttons),
#: and no script, style or form target but this server's own files.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Vary": "X-Conveyor-Partial, Cookie, Authorization",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _urlid(value: str) -> str:
    """An id as one path segment (event ids may hold ``/``, ``?``, ``#``...)."""
    return quote(str(value), safe="")


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("conveyor.dashboard", "templates"),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # the templates ship with the package: no need to stat them per page
    )
    env.filters.update(
        duration=fmt.duration, utc=fmt.utc, iso=fmt.iso, clock=fmt.clock, count=fmt.count,
        percent=fmt.percent, rate=fmt.rate, pretty_json=fmt.pretty_json, preview=fmt.preview,
        error_line=fmt.error_line, urlid=_urlid, ts=fmt.ts_of,
    )
    env.globals.update(age=fmt.age, statuses=STATUSES, windows=WINDOWS, page_link=page_link, asset=asset_url)
    macros = env.get_template("_macros.html").module  # badge, when, run_table...: in every template
    env.globals.update({name: getattr(macros, name) for name in MACROS})
    return env


@cache
def asset(name: str) -> tuple[bytes, str]:
    """A static file's bytes and its content hash (the version in its URL)."""
    data = resources.files("conveyor.dashboard").joinpath("static", name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def asset_url(name: str) -> str:
    return f"/static/{name}?v={asset(name)[1]}"


def render(template: str, context: dict[str, Any], *, partial: bool = False, status: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    """The page (or only its ``live`` block when ``partial``) as a response."""
    tpl = environment().get_template(template)
    if partial and "live" in tpl.blocks:
        html = "".join(tpl.blocks["live"](tpl.new_context(context)))
    else:
        html = tpl.render(context)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
