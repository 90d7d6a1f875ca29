import base64
import json
import os
import re
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from app.security.keyring import (
    Key,
    KeyRing,
    KeyRingError,
    generate_key,
    load_keyring,
    new_keyring,
    remove,
    rotate,
    save_keyring,
)

T0 = datetime(2026, 11, 29, 3, 0, 0, tzinfo=UTC)
SECRET = bytes(range(32))
SECRET_B64 = base64.urlsafe_b64encode(SECRET).decode().rstrip("=")


def make_key(kid: str = "a1b2c3", created: datetime = T0) -> Key:
    return Key(kid=kid, created=created, secret=SECRET)


def write_doc(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


def good_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"kid": "a1b2c3", "created": "2026-11-29T03:00:00Z", "secret": SECRET_B64}
    entry.update(changes)
    return {key: value for key, value in entry.items() if value is not None}


# --- keys ---------------------------------------------------------------------------------------------


def test_generate_key() -> None:
    key = generate_key(T0 + timedelta(microseconds=123456))
    assert len(key.kid) == 6
    assert int(key.kid, 16) >= 0
    assert key.kid == key.kid.lower()
    assert len(key.secret) == 32
    assert key.created == T0  # truncated to the second, as stored in the file
    assert generate_key(T0).secret != key.secret


def test_generate_key_avoids_taken_ids() -> None:
    taken = {generate_key(T0).kid for _ in range(50)}
    assert all(generate_key(T0, taken=taken).kid not in taken for _ in range(50))


def test_key_normalizes_created_to_utc() -> None:
    key = make_key(created=datetime(2026, 11, 29, 4, 0, tzinfo=timezone(timedelta(hours=1))))
    assert key.created == T0
    assert key.created.tzinfo is UTC


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kid": "ABCDEF"}, "6 lowercase hex"),
        ({"kid": "a1b2c"}, "6 lowercase hex"),
        ({"created": datetime(2026, 1, 1)}, "no timezone"),
        ({"secret": bytes(31)}, "31 bytes, need at least 32"),
    ],
)
def test_key_validation(kwargs: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"kid": "a1b2c3", "created": T0, "secret": SECRET, **kwargs}
    with pytest.raises(ValueError, match=message):
        Key(**fields)


def test_repr_masks_secret() -> None:
    key = make_key()
    ring = KeyRing([key])
    for text in (repr(key), str(key), repr(ring)):
        assert SECRET.hex() not in text
        assert SECRET_B64 not in text
        assert repr(SECRET) not in text
    assert "a1b2c3" in repr(key)
    assert "hidden" in repr(key)


# --- ring ---------------------------------------------------------------------------------------------


def test_ring_lookup_iteration_and_signing_key() -> None:
    old, new = make_key("aaaaaa", T0), make_key("bbbbbb", T0 + timedelta(days=1))
    ring = KeyRing([new, old])
    assert ring.signing_key is new
    assert ring.get("aaaaaa") is old
    assert ring.get("cccccc") is None
    assert len(ring) == 2
    assert list(ring) == [new, old]


def test_ring_tie_on_created_goes_to_last_added() -> None:
    ring = KeyRing([make_key("aaaaaa"), make_key("bbbbbb")])
    assert ring.signing_key.kid == "bbbbbb"


def test_ring_rejects_empty_and_duplicates() -> None:
    with pytest.raises(KeyRingError, match="empty"):
        KeyRing([])
    with pytest.raises(KeyRingError, match=r"duplicate key id.*a1b2c3"):
        KeyRing([make_key(), make_key(created=T0 + timedelta(days=1))])


def test_new_keyring() -> None:
    ring = new_keyring(T0)
    assert len(ring) == 1
    assert ring.signing_key.created == T0


def test_rotate_adds_newest_signing_key() -> None:
    ring = new_keyring(T0)
    rotated = rotate(ring, T0 + timedelta(days=30))
    assert len(rotated) == 2
    assert rotated.signing_key.kid != ring.signing_key.kid
    assert rotated.get(ring.signing_key.kid) == ring.signing_key
    assert len(ring) == 1  # rings are immutable


def test_rotate_twice_in_the_same_second() -> None:
    ring = rotate(new_keyring(T0), T0)
    assert ring.signing_key == list(ring)[-1]


def test_rotate_refuses_a_clock_that_went_backwards() -> None:
    ring = new_keyring(T0)
    with pytest.raises(KeyRingError, match="before the newest key"):
        rotate(ring, T0 - timedelta(hours=1))


def test_remove() -> None:
    ring = rotate(new_keyring(T0), T0 + timedelta(days=1))
    old = next(iter(ring))
    smaller = remove(ring, old.kid)
    assert len(smaller) == 1
    assert smaller.get(old.kid) is None
    with pytest.raises(KeyRingError, match="last key"):
        remove(smaller, smaller.signing_key.kid)
    with pytest.raises(KeyRingError, match="no key with id 'ffffff'"):
        remove(ring, "ffffff")


# --- file ---------------------------------------------------------------------------------------------


def test_file_round_trip(tmp_path: Path) -> None:
    ring = rotate(new_keyring(T0), T0 + timedelta(days=1))
    path = tmp_path / "keys.json"
    save_keyring(ring, path, overwrite=False)
    loaded = load_keyring(path)
    assert list(loaded) == list(ring)
    assert loaded.signing_key == ring.signing_key


def test_file_format(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    save_keyring(KeyRing([make_key()]), path, overwrite=False)
    doc = json.loads(path.read_text())
    assert doc == {
        "version": 1,
        "keys": [{"kid": "a1b2c3", "created": "2026-11-29T03:00:00Z", "secret": SECRET_B64}],
    }


def test_load_accepts_padded_base64(tmp_path: Path) -> None:
    path = write_doc(tmp_path / "k.json", {"version": 1, "keys": [good_entry(secret=SECRET_B64 + "=")]})
    assert load_keyring(path).signing_key.secret == SECRET


def test_saved_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old_umask = os.umask(0)
    try:
        save_keyring(new_keyring(T0), path, overwrite=False)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first, second = new_keyring(T0), new_keyring(T0)
    save_keyring(first, path, overwrite=False)
    with pytest.raises(KeyRingError, match=re.escape(f"{path} already exists; refusing to overwrite")):
        save_keyring(second, path, overwrite=False)
    assert list(load_keyring(path)) == list(first)
    save_keyring(second, path, overwrite=True)
    assert list(load_keyring(path)) == list(second)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]  # no temp files left behind


def test_save_into_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "keys.json"
    with pytest.raises(KeyRingError, match=re.escape(f"cannot write key ring file {path}")):
        save_keyring(new_keyring(T0), path, overwrite=False)


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(KeyRingError, match=re.escape(f"key ring file {path} does not exist")):
        load_keyring(path)


def test_load_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyRingError, match=re.escape(f"cannot read key ring file {tmp_path}")):
        load_keyring(tmp_path)


def test_load_not_json(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text('{"version": 1, "keys": [' + SECRET_B64)
    path.chmod(0o600)
    with pytest.raises(KeyRingError, match=r"is not valid JSON \(line 1, column") as info:
        load_keyring(path)
    assert str(path) in str(info.value)
    assert SECRET_B64 not in str(info.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "top level must be a JSON object"),
        ({"keys": [good_entry()]}, "unsupported or missing 'version'"),
        ({"version": 2, "keys": [good_entry()]}, "unsupported or missing 'version'"),
        ({"version": 1}, "missing field 'keys'"),
        ({"version": 1, "keys": {}}, "'keys' must be a list"),
        ({"version": 1, "keys": []}, "key ring is empty"),
        ({"version": 1, "keys": ["a1b2c3"]}, "key #0 must be a JSON object"),
        ({"version": 1, "keys": [good_entry(kid=None)]}, "key #0 is missing field 'kid'"),
        ({"version": 1, "keys": [good_entry(created=None)]}, "key #0 is missing field 'created'"),
        ({"version": 1, "keys": [good_entry(secret=None)]}, "key #0 is missing field 'secret'"),
        ({"version": 1, "keys": [good_entry(secret=123)]}, "key #0: field 'secret' must be a string"),
        ({"version": 1, "keys": [good_entry(note="x")]}, "key #0 has unknown field\\(s\\): note"),
        ({"version": 1, "keys": [good_entry(secret="not base64!")]}, "'secret' is not valid base64url"),
        ({"version": 1, "keys": [good_entry(secret="AAAAA")]}, "'secret' is not valid base64url"),
        ({"version": 1, "keys": [good_entry(secret="AAAA")]}, "secret is 3 bytes, need at least 32"),
        ({"version": 1, "keys": [good_entry(kid="XYZ")]}, "key id 'XYZ' is not 6 lowercase hex"),
        ({"version": 1, "keys": [good_entry(created="yesterday")]}, "'created' is not an ISO 8601 time"),
        ({"version": 1, "keys": [good_entry(created="2026-11-29T03:00:00")]}, "'created' has no timezone"),
        ({"version": 1, "keys": [good_entry(), good_entry()]}, "duplicate key id\\(s\\) in key ring: a1b2c3"),
    ],
)
def test_load_errors_name_the_file_and_the_problem(tmp_path: Path, doc: Any, message: str) -> None:
    path = write_doc(tmp_path / "keys.json", doc)
    with pytest.raises(KeyRingError, match=message) as info:
        load_keyring(path)
    assert str(info.value).startswith(f"key ring file {path}: ")
    assert SECRET_B64 not in str(info.value)


# Attack: a key ring another local user can read lets them mint a valid token for any recipient (and
# read their personal data through it); one they can write lets them put in a key of their own.
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o620, 0o602, 0o666, 0o777])
def test_load_refuses_a_key_ring_others_can_read_or_change(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "keys.json"
    save_keyring(new_keyring(T0), path, overwrite=False)
    path.chmod(mode)
    with pytest.raises(KeyRingError) as info:
        load_keyring(path)
    message = str(info.value)
    assert str(path) in message and f"mode {mode:04o}" in message and f"chmod 600 {path}" in message


def test_load_refuses_a_loose_file_behind_a_symlink(tmp_path: Path) -> None:
    # Kubernetes mounts secrets as symlinks: the target's mode is what counts.
    target = tmp_path / "data" / "keys.json"
    target.parent.mkdir()
    save_keyring(new_keyring(T0), target, overwrite=False)
    target.chmod(0o644)
    link = tmp_path / "keys.json"
    link.symlink_to(target)
    with pytest.raises(KeyRingError, match="readable or writable by other users"):
        load_keyring(link)
    target.chmod(0o400)
    assert len(load_keyring(link)) == 1


def test_load_warns_when_the_group_can_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.json"
    ring = new_keyring(T0)
    save_keyring(ring, path, overwrite=False)
    path.chmod(0o640)
    with caplog.at_level("WARNING", logger="app.security.keyring"):
        assert list(load_keyring(path)) == list(ring)
    assert f"{path} is readable by its group (mode 0640)" in caplog.text and "chmod 600" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level("WARNING", logger="app.security.keyring"):
        load_keyring(path)
    assert caplog.text == ""
