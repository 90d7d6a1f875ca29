"""HTTP methods: the ``Allow`` header of a 405, the same from every route, whoever answers it.

Open-time routes answer their 405 themselves (``app.open_time.pipeline``); Starlette's routes raise
one that ``app.app`` answers with the methods of every route on that path (Starlette would name only
the first route's, in the order of a set). Both list the methods in ``ORDER``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.routing import BaseRoute, Match, Route

from app.asgi import Scope

ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def ordered(methods: Iterable[str]) -> list[str]:
    """The methods once each, in ``ORDER`` (others after them, alphabetically)."""
    return sorted(
        set(methods), key=lambda method: (ORDER.index(method) if method in ORDER else len(ORDER), method)
    )


def allow_header(methods: Iterable[str]) -> str:
    return ", ".join(ordered(methods))


def path_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path, in ``ORDER``."""
    methods: set[str] = set()
    for route in routes:
        if isinstance(route, Route) and route.methods and route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods
    return ordered(methods)
