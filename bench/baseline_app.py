"""The benchmark's baseline: a bare Starlette route returning a constant pre-encoded 2 KB JSON body.

Served by uvicorn with the same settings ``opentime serve`` uses (``app/cli/serve.py:run_server``):
httptools, uvloop, one worker, access log off, proxy headers on, no server header. The route matches
the same ``/v1/{token}/list/{block}.json`` URLs the opentime run requests, so both servers parse
identical requests.

    python3 bench/baseline_app.py --port 8001
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

BODY_SIZE = 2048


def constant_body(size: int = BODY_SIZE) -> bytes:
    """A JSON document of exactly ``size`` bytes, shaped like an amp-list response."""
    item = {
        "name": "Trail running shoes",
        "price": 129.0,
        "url": "https://shop.example.com/p/sku-0000",
        "image": "https://cdn.example.com/img/sku-0000.jpg",
    }
    doc: dict[str, object] = {"items": [item] * 12, "pad": ""}
    body = orjson.dumps(doc)
    if len(body) > size:
        raise ValueError(f"base document is already {len(body)} bytes")
    doc["pad"] = "x" * (size - len(body))
    body = orjson.dumps(doc)
    assert len(body) == size
    return body


BODY = constant_body()


async def constant(request: Request) -> Response:
    return Response(BODY, media_type="application/json")


async def ready(request: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/{token}/list/{block}.json", constant),
        Route("/readyz", ready),
    ]
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        access_log=False,
        log_level=args.log_level,
        server_header=False,
    )


if __name__ == "__main__":
    main()
