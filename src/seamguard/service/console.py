"""The operator's console: one page, one script and one style sheet, served by the daemon itself
(no CDN, no build step: plain JavaScript that reads the API with the operator's bearer token).

The shell carries no fleet data, so it is public as a login page must be; everything it shows is
read from the API with the token the operator pastes in (kept in the tab's ``sessionStorage``,
never in a cookie, so a page elsewhere cannot make the browser send it). A strict Content Security
Policy allows scripts and styles from the daemon only and no inline script, and the script writes
every text from the fleet with ``textContent``, never as markup.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Response

ASSETS = {"/console": ("console.html", "text/html; charset=utf-8"),
          "/console/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/console/app.css": ("app.css", "text/css; charset=utf-8")}  # fmt: skip
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def console_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    files = resources.files("seamguard.service") / "console_assets"
    for path, (name, media) in ASSETS.items():
        body = (files / name).read_bytes()

        def serve(body: bytes = body, media: str = media) -> Response:
            return Response(body, media_type=media, headers=HEADERS)

        router.add_api_route(path, serve, methods=["GET", "HEAD"])
    return router
