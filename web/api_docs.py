"""The partner API's interactive docs at /schema: Swagger UI, served by the app itself from
the `swagger-ui-bundle-v2` package (its dist files), never from a CDN. The page is plain
HTML that loads the bundle and web/static/api-docs.js, which starts the viewer on
/schema/openapi.json: no inline script or style, so the docs pages run under a policy of
'self' alone (web/headers.py DOCS_CSP), on an origin where the session cookie is in scope.

The bundle's files are served at /schema/swagger-ui-<version>/<file> (the version in the
path busts caches when the package is upgraded), a fixed list of them: not the package's
index.html and initializer, which point at the Swagger petstore on the internet."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from litestar import Request, Router, get
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path

ASSETS = Path(str(swagger_ui_path))
ASSET_DIR = ASSETS.name                     # swagger-ui-5.31.0
SERVED = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "index.css": "text/css", "favicon-32x32.png": "image/png",
          "oauth2-redirect.html": "text/html", "oauth2-redirect.js": "text/javascript"}
SCRIPT = "/static/api-docs.js"


@get([f"/{ASSET_DIR}/{name}" for name in SERVED], include_in_schema=False,
     sync_to_thread=False)
def swagger_ui_file(request: Request) -> File:
    name = request.url.path.rsplit("/", 1)[1]
    return File(ASSETS / name, media_type=SERVED[name], content_disposition_type="inline",
                headers={"Cache-Control": "public, max-age=31536000, immutable"})


class SwaggerDocs(OpenAPIRenderPlugin):
    """Swagger UI from the installed package; at /schema (the default) and /schema/swagger."""

    def __init__(self, path: str = "/swagger") -> None:
        super().__init__(path=path, favicon="", style="")

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        schema = self.get_openapi_json_route(request)          # /schema/openapi.json
        base = f"{schema.rsplit('/', 1)[0]}/{ASSET_DIR}"
        title = escape(str(openapi_schema["info"]["title"]))
        return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="icon" type="image/png" href="{base}/favicon-32x32.png">
  <link rel="stylesheet" href="{base}/swagger-ui.css">
  <link rel="stylesheet" href="{base}/index.css">
</head>
<body>
<div id="swagger-ui" data-schema="{escape(schema)}"
     data-oauth2-redirect="{base}/oauth2-redirect.html"></div>
<script src="{base}/swagger-ui-bundle.js"></script>
<script src="{SCRIPT}"></script>
</body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        router.register(swagger_ui_file)
