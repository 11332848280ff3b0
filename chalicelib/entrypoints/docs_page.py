"""The interactive documentation page (Swagger UI from swagger-ui-bundle, served without any CDN) and its files."""

from __future__ import annotations

import functools
from pathlib import Path

from chalice.app import Response

from chalicelib.entrypoints.response_models import error_body

_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
# name -> (file in swagger-ui-bundle's dist folder, or None for ours; content type)
ASSETS: dict[str, tuple[str | None, str]] = {
    "swagger-ui.css": ("swagger-ui.css", _CSS),
    "swagger-ui-bundle.js": ("swagger-ui-bundle.js", _JS),
    "swagger-initializer.js": (None, _JS),
}


# The page and its initializer are ours; the rest comes from swagger-ui-bundle.
# No inline script, so the page's Content-Security-Policy can allow only our own origin.
_INITIALIZER = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
  });
});
"""
# Relative URLs: the page is /docs, or /<stage>/docs behind API Gateway.
_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>Brokerage orders API</title>
    <link rel="stylesheet" href="docs/swagger-ui.css">
    <link rel="icon" href="data:,">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="docs/swagger-ui-bundle.js"></script>
    <script src="docs/swagger-initializer.js"></script>
  </body>
</html>
"""
# Everything from our own origin; Swagger UI sets inline styles and uses data: images.
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
# The files change only with the package: a day in caches is harmless.
_ASSET_CACHE_CONTROL = "public, max-age=86400"


def docs_page() -> Response:
    return Response(
        body=_PAGE,
        status_code=200,
        headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": _CONTENT_SECURITY_POLICY},
    )


@functools.cache
def _asset_text(file_name: str) -> str:
    # Imported here, not at module level: only this route needs the package,
    # and no other function should pay for its import on a cold start.
    from swagger_ui_bundle import swagger_ui_path  # noqa: PLC0415

    return (Path(str(swagger_ui_path)) / file_name).read_text(encoding="utf-8")


def docs_asset(name: str) -> Response:
    # An allow-list: the name never reaches the file system unless it is one of ours.
    if name not in ASSETS:
        return Response(body=error_body("No such file"), status_code=404, headers={"Content-Type": "application/json"})
    file_name, content_type = ASSETS[name]
    # Text, not bytes: Chalice sends a str body as is under `chalice local` and
    # API Gateway, while bytes would need binary media types on both ends.
    body = _INITIALIZER if file_name is None else _asset_text(file_name)
    return Response(
        body=body,
        status_code=200,
        headers={"Content-Type": content_type, "Cache-Control": _ASSET_CACHE_CONTROL},
    )
