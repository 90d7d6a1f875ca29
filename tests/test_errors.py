"""One error root: every exception class defined in app/ derives from ``OpentimeError``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import app
from app.errors import OpentimeError


def exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(app.__path__, "app."):
        if module_info.name == "app.__main__":
            continue  # runs the command line when imported
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_exception_in_app_derives_from_the_root() -> None:
    classes = exception_classes()
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, OpentimeError))
    assert outside == []


def test_the_walk_finds_the_tree() -> None:
    classes = exception_classes()
    for name in ("app.security.tokens.TokenExpired", "app.store.base.StoreError", "app.errors.NotFound"):
        assert name in classes


def test_value_errors_stay_value_errors() -> None:
    # Callers catch these as ValueError (parsers, the countdown renderer): the root is added, not swapped.
    from app.countdown.clock import CountdownError
    from app.ingest.event_types import EventTypesError
    from app.ingest.import_rows import ImportFileError, RowError

    for cls in (CountdownError, EventTypesError, ImportFileError, RowError):
        assert issubclass(cls, OpentimeError) and issubclass(cls, ValueError)
