"""The dashboard: one page and its script and style, served by the API from the package.

    GET /                 the page (no data in it: it asks the API, with the token you give it)
    GET /ui/{file}        its script and style

Everything is in the package (cerebelum/api/dashboard/static): nothing is fetched from another
site, nothing is built at install time, and it works offline. The page is a shell, so it needs
no token; every request it makes carries the bearer token the person typed (kept in the tab's
sessionStorage only), so the API's scopes apply to the dashboard as to anyone.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response

STATIC = files(__package__) / "static"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
PAGE_PATHS = frozenset({"/", "/ui/app.js", "/ui/app.css"})
# The page runs only its own script and style, talks only to this API, is never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def add_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")

    @app.get("/ui/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            raise HTTPException(404, "Not Found")
        return Response((STATIC / name).read_bytes(), media_type=media)
