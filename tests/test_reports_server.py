"""A campaign report against a real ``opentime serve`` and the ``opentime report`` command.

Exposures are recorded through an ``ExposureRecorder`` (the sink the server runs) and flushed into
the server's SQLite store, as another node sharing the store would; then the server's
``GET /api/campaigns/demo/report`` and ``opentime report`` (table, --json, --png) must show the same
counts, and the PNG must show the bars: decoded, their colours found and their heights compared.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from PIL import Image

from app.config import Settings
from app.decisions.exposure import Event, Exposure
from app.images.report_chart import COLOURS, WHISKER, plot_box
from app.reports.recorder import ExposureRecorder
from app.store import open_store
from tests.servers import clean_env, free_port, running, server_config
from tests.test_routes_api import make_key

pytestmark = pytest.mark.server
NOW = time.time()


def seen(variant: str, event: Event, fetch_class: str = "direct") -> Exposure:
    return Exposure("demo", "hello", variant, "subject", fetch_class, "ok", "list", event, NOW)


def synthetic() -> list[Exposure]:
    """Control a: 400 opens (100 of them Apple prefetches), 20 clicks (5%); b: 400 opens, 48 clicks
    (12%); the holdout: 100 opens, 3 clicks; a scanner's 30 opens and 30 clicks of b."""
    return (
        [seen("a", "open")] * 300
        + [seen("a", "open", "apple-mpp")] * 100
        + [seen("a", "click")] * 20
        + [seen("b", "open", "gmail-proxy")] * 400
        + [seen("b", "click")] * 48
        + [seen("holdout", "open")] * 100
        + [seen("holdout", "click")] * 3
        + [seen("b", "open", "scanner"), seen("b", "click", "scanner")] * 30
    )


async def record_and_flush(url: str) -> int:
    store = open_store(url)
    await store.open()
    try:
        recorder = ExposureRecorder(capacity=10_000)
        for exposure in synthetic():
            recorder.record(exposure)
        return await recorder.flush(store.exposures)
    finally:
        await store.close()


def opentime(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def test_server_and_command_report_the_same_counts_and_draw_them(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = server_config(settings, port, tmp_path / "server.toml", exposure_flush_seconds=0.2)
    key = make_key(settings, "reports:read")
    with running(["serve", "--config", str(config)], port, tmp_path / "server.log"):
        assert asyncio.run(record_and_flush(settings.database_url)) == 9  # counters, not 1,462 rows
        base = f"http://127.0.0.1:{port}"
        response = httpx.get(f"{base}/api/campaigns/demo/report", headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        api = response.json()
        metrics = httpx.get(f"{base}/metrics").text
        assert "opentime_exposures_flush_failures_total 0.0" in metrics
    [opens] = api["opens"]
    assert (opens["total"], opens["human"], opens["apple_prefetch"], opens["scanner"]) == (930, 800, 100, 30)
    rows = {r["variant"]: r for r in api["variants"]}
    assert [(r["variant"], r["role"]) for r in api["variants"]] == [
        ("a", "control"),
        ("b", "variant"),
        ("holdout", "holdout"),
    ]
    assert [(rows[v]["exposures"], rows[v]["clicks"]) for v in ("a", "b", "holdout")] == [
        (400, 20),
        (400, 48),
        (100, 3),
    ]
    assert (rows["a"]["ctr"], rows["b"]["ctr"]) == (0.05, 0.12)
    assert rows["b"]["p_value"] < 0.001  # 5% against 12% on 400 each: z = 3.55

    png = tmp_path / "report.png"
    shown = opentime(
        "report", "--database-url", settings.database_url, "--campaign", "demo", "--json", "--png", str(png)
    )
    assert shown.returncode == 0, shown.stderr
    assert orjson.loads(shown.stdout) == api
    assert f"chart written to {png}" in shown.stderr

    table = opentime("report", "--database-url", settings.database_url, "--campaign", "demo")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert any(line.split() == ["hello", "930", "100", "30", "800", "400", "400"] for line in lines), (
        table.stdout
    )
    b_row = next(line.split() for line in lines if line.startswith("hello") and " b " in line)
    assert b_row[:7] == ["hello", "subject", "b", "variant", "400", "48", "12.00%"]

    check_chart(png.read_bytes())


def check_chart(data: bytes) -> None:
    """Three bars in the role colours, heights in proportion to the rates, whiskers above them."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (960, 520)
    rgb = image.convert("RGB")
    left, top, right, bottom = plot_box()
    row = bottom - 2
    spans: dict[tuple[int, int, int], list[int]] = {}
    for x in range(left, right):
        pixel = rgb.getpixel((x, row))
        assert isinstance(pixel, tuple)
        for colour in COLOURS.values():
            if pixel[:3] == colour:
                spans.setdefault(colour, []).append(x)
    control, variant, holdout = COLOURS["control"], COLOURS["variant"], COLOURS["holdout"]
    assert set(spans) == {control, variant, holdout}  # no green: no rule-chosen rows
    assert min(spans[control]) < min(spans[variant]) < min(spans[holdout])  # control first, holdout last
    heights = {colour: bar_height(rgb, min(xs) + 2, bottom, colour) for colour, xs in spans.items()}
    # 12% against 5%: 2.4 times as tall (to a pixel or two); 3% a little over half the control.
    assert heights[variant] / heights[control] == pytest.approx(2.4, abs=0.05)
    assert heights[holdout] / heights[control] == pytest.approx(0.6, abs=0.05)
    centre = (min(spans[variant]) + max(spans[variant])) // 2
    above = [rgb.getpixel((centre, y)) for y in range(top, bottom - heights[variant])]
    assert WHISKER in above  # the interval's upper whisker rises above the bar


def bar_height(image: Image.Image, x: int, bottom: int, colour: tuple[int, int, int]) -> int:
    y = bottom - 1
    while image.getpixel((x, y - 1)) == colour:
        y -= 1
    return bottom - y
