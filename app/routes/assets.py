"""``GET /static/<path>``: pictures under the static folder that campaigns link to.

The demo's product pictures live in ``static/demo/products/`` and its list items point here
(``base = "/static/demo/products/"`` in blocks.toml, joined to ``public_base_url``), so the demo's
emails show real images wherever it is deployed. Only image files are served; paths that leave the
static folder, other files and missing ones are a 404. Not per recipient, so shared caches may keep
them (``app.content.cache_policy``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from app.content.cache_policy import STATIC_ASSET_HEADERS
from app.errors import NotFound
from app.services import Services

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


async def static_image(request: Request) -> FileResponse:
    services: Services = request.state.services
    # resolve() and the stat call touch the disk: off the event loop.
    path = await run_in_threadpool(find_image, services.settings.static_dir, request.path_params["path"])
    if path is None:
        raise NotFound("no such image")
    return FileResponse(path, media_type=IMAGE_TYPES[path.suffix.lower()], headers=STATIC_ASSET_HEADERS)


def find_image(static_dir: Path, relative: str) -> Path | None:
    """The image file at ``relative`` under ``static_dir``, or None (never a file outside it)."""
    root = static_dir.resolve()
    path = (root / relative).resolve()
    if path.suffix.lower() not in IMAGE_TYPES or not path.is_relative_to(root) or not path.is_file():
        return None
    return path


routes = [Route("/static/{path:path}", static_image, methods=["GET", "HEAD"])]
