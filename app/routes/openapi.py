"""``GET /api/openapi.json``: the OpenAPI 3.1 description of ``/api/*`` and ``/webhooks/*``.

Public (it holds no secret and a client needs it before it has a key) and cacheable for a few minutes.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.openapi.document import DOCUMENT_CACHE_CONTROL, OPENAPI_PATH, document


def server_version() -> str:
    try:
        return version("opentime")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0"


async def openapi(request: Request) -> Response:
    body = orjson.dumps(document(server_version()))
    return Response(body, media_type="application/json", headers={"cache-control": DOCUMENT_CACHE_CONTROL})


routes = [Route(OPENAPI_PATH, openapi, methods=["GET"])]
