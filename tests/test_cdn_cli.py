"""``opentime cdn key``: an operator learns the surrogate key the server tags a recipient's images with.

The key printed must be the one in the server's ``Surrogate-Key`` header for that recipient, or a
purge by it evicts nothing. Purging through a real Varnish is tested in tests/test_topology.py.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from starlette.testclient import TestClient

from app.cli.main import main
from app.demo import recipient_id
from app.security.keyring import load_keyring, rotate, save_keyring
from app.security.tokens import TokenSigner


def cdn(*args: str, stdin: str | None = None) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(main, ["cdn", *args], input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout.split(), result.stderr


def image_keys(client: TestClient, signer: TokenSigner, recipient: str) -> list[str]:
    token = signer.sign("demo", recipient, now=int(time.time()))
    response = client.get(f"/v1/{token}/img/banner.png")
    assert response.status_code == 200 and "x-opentime-fallback" not in response.headers
    return response.headers["surrogate-key"].split()


def test_the_printed_key_is_the_one_the_server_tags_images_with(
    client: TestClient, signer: TokenSigner, keys_file: Path
) -> None:
    ada, bob = recipient_id(1), recipient_id(2)
    code, printed, _ = cdn("key", "--keys", str(keys_file), ada, bob)
    assert code == 0
    assert printed == [image_keys(client, signer, ada)[0], image_keys(client, signer, bob)[0]]
    assert all(key.startswith("r-") and len(key) == 18 for key in printed)
    assert ada not in "".join(printed)  # a keyed hash, no personal data
    # Recipients one a line on stdin (ids stay out of shell history and process lists).
    assert cdn("key", "--keys", str(keys_file), stdin=f"{ada}\n\n{bob}\n")[1] == printed


def test_campaign_keys_and_keys_from_before_a_rotation(
    client: TestClient, signer: TokenSigner, keys_file: Path
) -> None:
    assert cdn("key", "--campaign", "demo")[1] == ["c-demo"]
    assert image_keys(client, signer, recipient_id(1))[1] == "c-demo"
    code, _, err = cdn("key", "--campaign", "Not A Campaign")
    assert code == 2 and "--campaign must match" in err

    before = cdn("key", "--keys", str(keys_file), recipient_id(1))[1]
    ring = rotate(load_keyring(keys_file), datetime.now(UTC) + timedelta(seconds=5))
    save_keyring(ring, keys_file, overwrite=True)
    after = cdn("key", "--keys", str(keys_file), recipient_id(1))[1]
    assert after != before  # the newest key hashes from now on
    assert sorted(cdn("key", "--all-keys", "--keys", str(keys_file), recipient_id(1))[1]) == sorted(
        before + after
    )


def test_purge_refuses_a_bad_url_and_says_when_the_cdn_is_unreachable(keys_file: Path) -> None:
    code, _, err = cdn("purge", "--url", "ftp://cdn", "--token", "t", "--campaign", "demo")
    assert code == 2 and "--url must be an http(s) URL" in err
    code, _, err = cdn("purge", "--url", "http://127.0.0.1:9", "--token", "t", "--campaign", "demo")
    assert code == 2 and "cannot reach" in err
