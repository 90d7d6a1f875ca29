"""The preview page in a real headless Chromium against a real ``opentime serve``.

Needs the Debian ``chromium`` package and Playwright's Python package (never ``playwright install``:
no browser download). Without them a developer gets a skip saying so; CI (``CI=true``) fails instead.
The screenshot lands in ``test-artifacts/preview.png`` for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

from app.config import PROJECT_ROOT, Settings
from app.demo import demo_rows, recipient_id
from tests.amp_tools import require_amp_validator
from tests.conftest import DEMO_COUNT, SENDER
from tests.servers import OPENTIME, clean_env, free_port, running

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = PROJECT_ROOT / "test-artifacts" / "preview.png"
INSTALL_HINT = "apt-get install -y chromium && pip install playwright"


def missing_browser_tools() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


@pytest.fixture
def browser_tools() -> None:
    missing = missing_browser_tools()
    if missing is None:
        return
    message = f"browser test needs chromium and playwright ({missing}): {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must run the browser test, not skip it)", pytrace=False)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Playwright's sync API runs an event loop in this thread: start it after all asyncio.run() setup."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def write_config(settings: Settings, port: int, path: Path) -> Path:
    # AMP4EMAIL wants https URLs in the email: with http://127.0.0.1 the validator would say FAIL.
    path.write_text(
        f'public_base_url = "{settings.public_base_url}"\n'
        f'keys_file = "{settings.keys_file}"\n'
        f'database_url = "{settings.database_url}"\n'
        f'allowed_senders = ["{SENDER}"]\n'
        f"port = {port}\n"
    )
    return path


def create_preview_key(database_url: str) -> str:
    env = {**clean_env(), "OPENTIME_DATABASE_URL": database_url}
    command = [*OPENTIME, "apikeys", "create", "--name", "browser-test", "--scope", "preview"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
    return done.stdout.strip()


def first_name(recipient: str) -> str:
    profiles = {rid: orjson.loads(data) for rid, data in demo_rows(DEMO_COUNT)}
    name: str = profiles[recipient]["first_name"]
    return name


def test_preview_page_in_chromium(browser_tools: None, settings: Settings, tmp_path: Path) -> None:
    require_amp_validator()
    from playwright.sync_api import expect

    port = free_port()
    config = write_config(settings, port, tmp_path / "opentime.toml")
    key = create_preview_key(settings.database_url)
    recipient = recipient_id(3)
    server = running(["serve", "--config", str(config)], port, tmp_path / "server.log")
    with server, chromium() as browser:
        context = browser.new_context(
            http_credentials={"username": "marketer", "password": key},
            viewport={"width": 1440, "height": 1000},
        )
        page = context.new_page()
        response = page.goto(f"http://127.0.0.1:{port}/preview/demo?recipient={recipient}")
        assert response is not None and response.status == 200
        assert response.headers["x-frame-options"] == "DENY"

        email = page.frame_locator("#html-part")
        expect(email.locator("h1")).to_contain_text(f"Hi {first_name(recipient)}!")
        expect(page.locator("#validator .verdict")).to_have_text("PASS")
        picks = page.locator("#block-picks pre.json")
        expect(picks).to_contain_text('"items"')
        expect(picks).to_contain_text("https://shop.example.com/p/sku-")
        expect(page.locator("#block-picks .badge")).to_have_text("live")

        page.fill("input[name=at]", "2030-01-02T03:04:05")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert "at=2030-01-02T03%3A04%3A05" in page.url
        expect(page.locator(".summary")).to_contain_text("2030-01-02 03:04:05 UTC")
        expect(page.locator("#validator .verdict")).to_have_text("PASS")
        expect(email.locator("h1")).to_contain_text(first_name(recipient))

        # Chromium does not paint iframes outside the viewport: make the viewport the whole page.
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 1440, "height": height})
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        context.close()
    assert SCREENSHOT.stat().st_size > 10_000


def test_preview_csp_loads_this_servers_images_and_no_other_http_ones(
    browser_tools: None, settings: Settings, tmp_path: Path
) -> None:
    # The server on http://127.0.0.1 (as in serve --demo): the email's banner, from public_base_url,
    # must load in the preview; the same image from another http origin (localhost) must not.
    port = free_port()
    local = settings.replace(public_base_url=f"http://127.0.0.1:{port}")
    templates = tmp_path / "amp_templates"
    shutil.copytree(settings.templates_dir, templates)
    html = templates / "demo" / "email.html"
    foreign = '<img id="foreign" src="{{ urls.img.banner | replace("127.0.0.1", "localhost") }}" alt="">'
    html.write_text(re.sub(r"(<body[^>]*>)", rf"\1{foreign}", html.read_text(), count=1))
    config = write_config(local, port, tmp_path / "opentime.toml")
    config.write_text(config.read_text() + f'templates_dir = "{templates}"\n')
    key = create_preview_key(settings.database_url)
    server = running(["serve", "--config", str(config)], port, tmp_path / "server.log")
    with server, chromium() as browser:
        context = browser.new_context(http_credentials={"username": "marketer", "password": key})
        page = context.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        response = page.goto(f"http://127.0.0.1:{port}/preview/demo?recipient={recipient_id(1)}")
        assert response is not None and response.status == 200
        page.wait_for_load_state("networkidle")
        images = dict(
            page.frame_locator("#html-part")
            .locator("img")
            .evaluate_all("imgs => imgs.map(i => [i.src.replace(/\\/v1\\/.*\\//, '/v1/…/'), i.naturalWidth])")
        )
        context.close()
    assert images[f"http://localhost:{port}/v1/…/banner.png"] == 0  # blocked
    assert images[f"http://127.0.0.1:{port}/v1/…/banner@2x.png"] == 1200  # loaded
    # Chromium reports the violation more than once; it is always that one image.
    assert blocked and all(f"Loading the image 'http://localhost:{port}/v1/" in text for text in blocked)
