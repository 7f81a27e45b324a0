"""The dashboard: one page and its script and style, served by the API from the package.

    GET /                 the page (no data in it: it asks the API, with the token you give it)
    GET /ui/{file}        its script and style, and the interactive docs' scripts
    GET /docs, /redoc     the API's interactive docs (Swagger UI, ReDoc) from vendored files
                          (static/vendor/README.md), on /openapi.json

Everything is in the package (cerebelum/api/dashboard/static): nothing is fetched from another
site, nothing is built at install time, and it works offline. The page is a shell, so it needs
no token; every request it makes carries the bearer token the person typed (kept in the tab's
sessionStorage only), so the API's scopes apply to the dashboard as to anyone.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

STATIC = files(__package__) / "static"
JS, CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
ASSETS = {
    "app.js": JS,
    "app.css": CSS,
    "vendor/swagger-ui-bundle.js": JS,
    "vendor/swagger-ui.css": CSS,
    "vendor/redoc.standalone.js": JS,
}
DOCS_PAGES = ("/docs", "/redoc")
# What anyone may fetch without a token: pages and scripts that hold no data, and the API's
# description (the routes are documented in the open anyway).
PAGE_PATHS = frozenset({"/", *(f"/ui/{name}" for name in ASSETS)})
PUBLIC_PATHS = PAGE_PATHS | frozenset({*DOCS_PAGES, "/openapi.json"})
# The page runs only its own script and style, talks only to this API, is never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def add_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Cerebelum API",
            swagger_js_url="/ui/vendor/swagger-ui-bundle.js",
            swagger_css_url="/ui/vendor/swagger-ui.css",
            swagger_favicon_url="data:,",
            # No badge from validator.swagger.io: nothing leaves for another site.
            swagger_ui_parameters={"validatorUrl": None},
        )  # fmt: skip

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title="Cerebelum API",
            redoc_js_url="/ui/vendor/redoc.standalone.js", redoc_favicon_url="data:,",
            with_google_fonts=False,
        )  # fmt: skip

    @app.get("/ui/{name:path}", include_in_schema=False)
    async def asset(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            raise HTTPException(404, "Not Found")
        return Response((STATIC / name).read_bytes(), media_type=media)
