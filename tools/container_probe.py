"""Checks tools/container-check.sh runs from the host against the Opentime image.

    python3 tools/container_probe.py demo BASE_URL DEMO_LOG
        /healthz, recipient cust-0000001's amp-list answers (the demo's own synthetic profile, item by
        item) and banner image (a PNG of the block's size with the block's background and drawn layers),
        fetched from BASE_URL with the paths the demo printed in DEMO_LOG.
    python3 tools/container_probe.py no-secret BUNDLE ROOTFS HISTORY
        no certificate of BUNDLE that the image does not ship itself (the proxy's CA handed to the build as
        a secret) appears in any file of the exported image ROOTFS nor in its HISTORY/config text.

Exit status 0 when every check holds; otherwise the failed check on stderr and status 1.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from app.demo import DEMO_SENDER, demo_rows

RECIPIENT = "cust-0000001"
BANNER_SIZE = (600, 200)  # amp_templates/demo/blocks.toml [blocks.banner]
BANNER_BACKGROUND = (0x1D, 0x35, 0x57)
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----\s+(.+?)\s+-----END CERTIFICATE-----", re.DOTALL)


class CheckFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http to the container
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()


def printed(log: str, pattern: str) -> str:
    """The path and query of the first URL the demo printed that matches ``pattern``."""
    match = re.search(pattern, log)
    check(match is not None, f"the demo did not print {pattern!r}")
    assert match is not None
    parts = urlsplit(match.group(1))
    return parts.path + (f"?{parts.query}" if parts.query else "")


def demo_profile() -> dict[str, object]:
    """cust-0000001's synthetic profile, as the demo in the container stored it (same seed)."""
    recipient, encoded = next(demo_rows(1))
    check(recipient == RECIPIENT, f"the first demo recipient is {recipient}, not {RECIPIENT}")
    profile: dict[str, object] = json.loads(encoded)
    return profile


def check_lists(base: str, log: str) -> None:
    profile = demo_profile()
    sender = {"AMP-Email-Sender": DEMO_SENDER}
    picks_path = printed(log, rf"{RECIPIENT}:\n(?:.*\n)*?.*?(http://\S+/list/picks\.json)")
    status, headers, body = get(base + picks_path, sender)
    check(status == 200, f"picks.json answered {status}")
    check("x-opentime-fallback" not in headers, f"picks.json served the fallback: {headers}")
    check(headers.get("content-type", "").startswith("application/json"), f"picks.json type: {headers}")
    check(
        headers.get("amp-email-allow-sender") == DEMO_SENDER,
        f"picks.json lacks the AMP CORS header: {headers}",
    )
    items = json.loads(body)["items"]
    expected = [pick["name"] for pick in profile["recommendations"]]  # type: ignore[attr-defined]
    check([item["name"] for item in items] == expected, f"picks {items} are not {RECIPIENT}'s {expected}")
    hello_path = picks_path.replace("/list/picks.json", "/list/hello.json")
    status, _, body = get(base + hello_path, sender)
    check(status == 200, f"hello.json answered {status}")
    hello = json.loads(body)["items"][0]
    check(hello["first_name"] == profile["first_name"], f"hello.json {hello} is not {RECIPIENT}'s")
    print(f"amp-list: {len(items)} picks and the greeting of {RECIPIENT}, with the AMP CORS header")


def check_image(base: str, log: str) -> None:
    status, headers, body = get(base + printed(log, r"image \(open in a browser\): (http://\S+\.png)"))
    check(status == 200, f"the banner answered {status}")
    check(headers.get("content-type") == "image/png", f"the banner's type: {headers}")
    with Image.open(io.BytesIO(body)) as decoded:
        check(decoded.format == "PNG", f"the banner is {decoded.format}, not PNG")
        check(decoded.size == BANNER_SIZE, f"the banner is {decoded.size}, not {BANNER_SIZE}")
        rgb = decoded.convert("RGB")
    # Between the text and the product picture: the block's background.
    check(rgb.getpixel((404, 100)) == BANNER_BACKGROUND, f"background pixel {rgb.getpixel((404, 100))}")
    # The greeting ("Hi <name>,") draws white text at x 32-392, y 30-90.
    white = sum(rgb.crop((32, 30, 392, 90)).convert("L").histogram()[231:])
    check(white > 200, f"the greeting drew {white} white pixels")
    # The product picture (x 416-584, y 16-184) is a photo, not the background.
    picture = rgb.crop((440, 40, 560, 160)).getcolors(maxcolors=1 << 16) or []
    check(len(picture) > 50, f"the product picture has {len(picture)} colours")
    print(f"image: PNG {decoded.size[0]}x{decoded.size[1]}, background, greeting and picture drawn")


def demo(base: str, log_file: str) -> None:
    log = Path(log_file).read_text(encoding="utf-8")
    status, _, body = get(f"{base}/healthz")
    check(status == 200, f"/healthz answered {status}: {body!r}")
    print(f"healthz: {status} {body.decode(errors='replace').strip()[:80]}")
    check_lists(base, log)
    check_image(base, log)


def certificates(bundle: bytes) -> list[bytes]:
    """The DER bytes of every PEM certificate in ``bundle``."""
    return [base64.b64decode(b"".join(body.split())) for body in PEM.findall(bundle)]


def needles(der: bytes) -> list[bytes]:
    """What the certificate looks like in a file: its DER bytes and two 64-character lines of its PEM."""
    pem = base64.b64encode(der)
    return [der, pem[64:128], pem[128:192]]


def files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                yield path


def no_secret(bundle_file: str, rootfs: str, history_file: str) -> None:
    root = Path(rootfs)
    shipped_bundle = root / "etc/ssl/certs/ca-certificates.crt"
    shipped = set(certificates(shipped_bundle.read_bytes())) if shipped_bundle.exists() else set()
    secret = [der for der in certificates(Path(bundle_file).read_bytes()) if der not in shipped]
    if not secret:
        check(os.environ.get("CI") != "true", f"every certificate of {bundle_file} ships in the image")
        print(f"no-secret: every certificate of {bundle_file} ships in the image: nothing to look for")
        return
    wanted = [needle for der in secret for needle in needles(der)]
    history = Path(history_file).read_bytes()
    check(not any(needle in history for needle in wanted), "the image history/config holds the CA bundle")
    scanned = 0
    for path in files(root):
        data = path.read_bytes()
        scanned += 1
        check(not any(needle in data for needle in wanted), f"{path.relative_to(root)} holds the CA bundle")
    print(f"no-secret: none of {len(secret)} build-only certificate(s) in {scanned} files nor the history")


def main(argv: list[str]) -> int:
    commands: dict[str, tuple[Callable[..., None], int]] = {"demo": (demo, 2), "no-secret": (no_secret, 3)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        commands[argv[1]][0](*argv[2:])
    except (CheckFailed, OSError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
