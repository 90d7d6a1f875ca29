"""``opentime serve --demo`` as the README tells a newcomer to run it: a real process, its printed
commands run as printed, its preview link opened in Chromium, and stopped with SIGTERM or Ctrl+C."""

from __future__ import annotations

import email
import email.policy
import io
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from app.campaigns.urls import PLACEHOLDER_BASE_URL
from app.campaigns.validator import AmpValidator
from app.config import PROJECT_ROOT
from tests.servers import OPENTIME, clean_env, free_port, running
from tests.test_preview_browser import browser_tools, chromium  # noqa: F401  (fixture)

pytestmark = pytest.mark.server

SENDER = "news@example.com"
SCREENSHOT = PROJECT_ROOT / "test-artifacts" / "demo-preview.png"
BANNER_BLUE = (0x1D, 0x35, 0x57)  # the demo banner's background (amp_templates/demo/blocks.toml)


@dataclass(frozen=True)
class Demo:
    base: str
    text: str  # what it printed
    folder: Path  # its temporary folder

    def printed(self, pattern: str) -> re.Match[str]:
        match = re.search(pattern, self.text)
        assert match, f"the demo did not print {pattern!r}:\n{self.text}"
        return match

    @property
    def preview_link(self) -> str:
        return self.printed(r"open in a browser: (http://\S+/preview/\S+)").group(1)

    @property
    def preview_key(self) -> str:
        return self.printed(r"as the password \(any user name\): (otk_\S+)").group(1)


def demo_of(log: Path, port: int) -> Demo:
    text = log.read_text()
    folder = re.search(r"temporary folder: (\S+) \(deleted on exit\)", text)
    assert folder, text
    return Demo(f"http://127.0.0.1:{port}", text, Path(folder.group(1)))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo server for the tests that only read from it (each start loads 1,000 recipients)."""
    root = tmp_path_factory.mktemp("demo")
    port = free_port()
    with running(["serve", "--demo", "--port", str(port)], port, root / "demo.log", cwd=root):
        yield demo_of(root / "demo.log", port)


def opentime(command: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a printed ``opentime ...`` command line (``> file`` redirection included) as a shell would."""
    words = shlex.split(command)
    assert words[0] == "opentime", command
    out = None
    if ">" in words:
        at = words.index(">")
        words, out = words[:at], cwd / words[at + 1]
    done = subprocess.run(
        [*OPENTIME, *words[1:]],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**clean_env(), **(env or {})},
    )
    if out is not None:
        out.write_text(done.stdout)
    return done


def test_demo_needs_no_configuration_and_prints_working_urls(demo: Demo, tmp_path: Path) -> None:
    urls = re.findall(r"curl -H 'AMP-Email-Sender: news@example.com' (\S+)", demo.text)
    assert len(urls) >= 4
    response = httpx.get(urls[1], headers={"AMP-Email-Sender": SENDER})
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    assert response.json()["items"]
    view = demo.printed(r"web view \(open in a browser\): (\S+)")
    assert "Hi " in httpx.get(view.group(1)).text
    image = demo.printed(r"image \(open in a browser\): (\S+)")
    picture = httpx.get(image.group(1))
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert "x-opentime-fallback" not in picture.headers
    event = demo.printed(r"(OPENTIME_WEBHOOK_SECRET)=(\S+) (opentime events send .+)")
    sent = opentime(event.group(3), tmp_path, {event.group(1): event.group(2)})
    assert sent.returncode == 0, sent.stdout + sent.stderr
    hello = httpx.get(urls[0], headers={"AMP-Email-Sender": SENDER}).json()
    assert hello["items"][0]["first_name"] == "Zoe"


def amp_part(message: EmailMessage) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/x-amp-html":
            content: str = part.get_content()
            return content
    raise AssertionError("no text/x-amp-html part")


def test_the_printed_render_commands_make_an_email_that_passes_the_validator(
    demo: Demo, tmp_path: Path, amp_validator: AmpValidator
) -> None:
    commands = re.findall(r"^  (opentime (?:render|validate) .+)$", demo.text, re.MULTILINE)
    assert [c.split()[1] for c in commands] == ["render", "render", "validate"], demo.text
    for command in commands[:2]:
        done = opentime(command, tmp_path)
        assert done.returncode == 0, done.stderr
        assert "warning" not in done.stderr  # rendered as sent: https URLs
    message = email.message_from_bytes((tmp_path / "demo.eml").read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    amp = amp_part(message)
    result = amp_validator.validate(amp)
    assert result.passed, result.format()
    assert f"{PLACEHOLDER_BASE_URL}/v1/" in amp and "http://" not in amp
    assert (tmp_path / "demo-email" / "email.amp.html").read_text() != ""
    validated = opentime(commands[2], tmp_path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout.startswith("PASS  demo-email/email.amp.html")


def test_the_printed_preview_link_and_key_open_the_preview(demo: Demo, tmp_path: Path) -> None:
    link, key = demo.preview_link, demo.preview_key
    parts = urlsplit(link)
    assert (parts.username, parts.password) == ("demo", key)
    # httpx, like a browser, sends the link's user:password as Basic auth. The first preview starts the AMP
    # validator (node + wasm), which takes seconds on a loaded machine: the test is about what it shows.
    page = httpx.get(link, timeout=30)
    assert page.status_code == 200, page.text
    assert '<span class="badge verdict ok">PASS</span>' in page.text
    assert f"Validated with URLs on <code>{PLACEHOLDER_BASE_URL}</code>" in page.text
    bare = link.replace(f"demo:{key}@", "")
    assert httpx.get(bare).status_code == 401
    assert httpx.get(bare, auth=("anyone", key)).status_code == 200
    assert httpx.get(bare, auth=("demo", key[:-1] + "x")).status_code == 401
    terminal = demo.printed(r"in the terminal: (opentime preview .+)")
    done = opentime(terminal.group(1), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "AMP validator: PASS" in done.stdout and PLACEHOLDER_BASE_URL in done.stdout


def blue_pixels(png: bytes) -> int:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(
        count
        for count, rgb in image.getcolors(maxcolors=1 << 20) or []
        if all(abs(a - b) <= 6 for a, b in zip(rgb, BANNER_BLUE, strict=True))
    )


def test_the_preview_page_in_chromium_passes_and_shows_the_demos_images(
    browser_tools: None,  # noqa: F811
    demo: Demo,
    amp_validator: AmpValidator,
) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        blocked: list[str] = []
        page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        response = page.goto(demo.preview_link)  # the printed link, key and all
        assert response is not None and response.status == 200
        expect(page.locator("#validator .verdict")).to_have_text("PASS")
        expect(page.locator(".summary")).to_contain_text("PASS")
        expect(page.locator("#validated-origin")).to_contain_text(
            f"Validated with URLs on {PLACEHOLDER_BASE_URL}"
        )
        expect(page.locator("#validated-origin")).to_contain_text(
            f"public_base_url {demo.base} is plain http"
        )
        frame = page.frame_locator("#html-part")
        expect(frame.locator("h1").first).to_contain_text("Hi ")
        page.wait_for_load_state("networkidle")
        # Chromium does not paint iframes outside the viewport: make the viewport the whole page.
        height = page.evaluate("document.documentElement.scrollHeight")
        page.set_viewport_size({"width": 1440, "height": height})
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        email_shot = page.locator("#html-part").screenshot()
        # (Playwright reports no network events for a sandboxed srcdoc frame: ask its images.)
        images = frame.locator("img").evaluate_all("imgs => imgs.map(i => [i.src, i.naturalWidth])")
        context.close()
    assert blocked == []
    own = {src: width for src, width in images if src.startswith(f"{demo.base}/v1/")}
    assert any("/img/banner" in src for src in own) and any("/img/countdown" in src for src in own), images
    assert all(width > 0 for width in own.values()), own  # loaded: the CSP let them through
    # What the marketer sees: the banner's dark blue fills a good part of the email's frame.
    assert blue_pixels(email_shot) > 30_000


@pytest.mark.parametrize(
    ("stop_with", "workers"),
    [(signal.SIGTERM, "1"), (signal.SIGINT, "1"), (signal.SIGTERM, "2")],
    ids=["sigterm", "ctrl-c", "sigterm-2-workers"],
)
def test_the_demo_removes_its_keys_when_stopped(
    stop_with: signal.Signals, workers: str, demo: Demo, tmp_path: Path, shared_redis: tuple[str, str]
) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    redis_url, prefix = shared_redis  # several workers need it; under this test's own key prefix
    env = None if workers == "1" else {"OPENTIME_REDIS_URL": redis_url, "OPENTIME_REDIS_KEY_PREFIX": prefix}
    args = ["serve", "--demo", "--port", str(port), "--workers", workers]
    with running(args, port, log, env=env) as process:
        this = demo_of(log, port)
        assert (this.folder / "keys.json").is_file() and (this.folder / "demo.db").is_file()
        # The preview key is minted per run: another demo's key opens nothing here.
        assert this.preview_key != demo.preview_key
        page = f"{this.base}/preview/demo"
        assert httpx.get(page, auth=("demo", this.preview_key)).status_code == 200
        assert httpx.get(page, auth=("demo", demo.preview_key)).status_code == 401
        process.send_signal(stop_with)
        assert process.wait(timeout=30) == 0, log.read_text()
    assert not this.folder.exists(), log.read_text()
    assert "Traceback" not in log.read_text()
