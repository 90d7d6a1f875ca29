from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.app import serve_app
from app.gc_policy import SERVER_THRESHOLDS


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_the_serving_factory_raises_the_collector_thresholds(
    restore_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `opentime serve` runs uvicorn with this factory (tests/test_server.py starts it for real); here only
    # the collector part, with the app itself stubbed out.
    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr("app.app.create_app", lambda **_: "the app")
    assert serve_app() == "the app"  # type: ignore[comparison-overlap]
    assert gc.get_threshold() == SERVER_THRESHOLDS
    assert SERVER_THRESHOLDS[0] >= 10_000
    assert gc.get_freeze_count() > 0  # start-up objects are out of the collector's sight
