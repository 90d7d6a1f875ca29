"""The signing key ring: the newest key signs, every listed key verifies.

File format (JSON, mode 0600)::

    {"version": 1, "keys": [{"kid": "3fa9c1", "created": "2026-11-29T03:00:00Z", "secret": "<base64url>"}]}
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import shlex
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.errors import OpentimeError

__all__ = [
    "Key",
    "KeyRing",
    "KeyRingError",
    "generate_key",
    "load_keyring",
    "new_keyring",
    "remove",
    "rotate",
    "save_keyring",
]

FILE_VERSION = 1
SECRET_SIZE = 32
_KID_RE = re.compile(r"[0-9a-f]{6}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+={0,2}")
_FIELDS = ("kid", "created", "secret")
# Anyone who can write the ring can mint tokens for every recipient, and anyone who can read it can
# too: those bits refuse the file. Group read only warns: a file owned by root and readable by the
# service's group (0640, as TLS keys under /etc/ssl/private, or a Kubernetes secret with fsGroup) is
# a deliberate set-up, not a mistake.
_REFUSED_BITS = stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH
_WARNED_BITS = stat.S_IRGRP

logger = logging.getLogger(__name__)


class KeyRingError(OpentimeError):
    """The key ring or its file is unusable; the message says which file and why (never the secret)."""


@dataclass(frozen=True, slots=True)
class Key:
    kid: str
    created: datetime
    secret: bytes

    def __post_init__(self) -> None:
        if not _KID_RE.fullmatch(self.kid):
            raise ValueError(f"key id {self.kid!r} is not 6 lowercase hex characters")
        if self.created.tzinfo is None:
            raise ValueError(f"key {self.kid}: created time has no timezone")
        if len(self.secret) < SECRET_SIZE:
            raise ValueError(
                f"key {self.kid}: secret is {len(self.secret)} bytes, need at least {SECRET_SIZE}"
            )
        object.__setattr__(self, "created", self.created.astimezone(UTC))

    def __repr__(self) -> str:
        return f"Key(kid={self.kid!r}, created={_format_time(self.created)!r}, secret=<hidden>)"


class KeyRing:
    """An immutable, non-empty set of keys with unique ids; `get` is a dict lookup."""

    __slots__ = ("_by_kid", "_keys", "_signing_key")

    def __init__(self, keys: Iterable[Key]) -> None:
        self._keys = tuple(keys)
        if not self._keys:
            raise KeyRingError("key ring is empty: it needs at least one key")
        self._by_kid = {key.kid: key for key in self._keys}
        if len(self._by_kid) != len(self._keys):
            dupes = sorted({k.kid for k in self._keys if sum(o.kid == k.kid for o in self._keys) > 1})
            raise KeyRingError(f"duplicate key id(s) in key ring: {', '.join(dupes)}")
        # Ties on `created` go to the key listed last, i.e. the one added by the latest rotation.
        self._signing_key = max(reversed(self._keys), key=lambda key: key.created)

    @property
    def signing_key(self) -> Key:
        return self._signing_key

    def get(self, kid: str) -> Key | None:
        return self._by_kid.get(kid)

    def __iter__(self) -> Iterator[Key]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(kids={[key.kid for key in self._keys]!r}, signing={self._signing_key.kid!r})"


def generate_key(now: datetime, *, taken: Iterable[str] = ()) -> Key:
    """A new random key; `created` is truncated to the second so it survives the file round trip."""
    taken = set(taken)
    kid = secrets.token_hex(3)
    while kid in taken:
        kid = secrets.token_hex(3)
    return Key(kid=kid, created=now.replace(microsecond=0), secret=secrets.token_bytes(SECRET_SIZE))


def new_keyring(now: datetime) -> KeyRing:
    return KeyRing([generate_key(now)])


def rotate(ring: KeyRing, now: datetime) -> KeyRing:
    """Add a new key that becomes the signing key; older keys keep verifying until removed."""
    key = generate_key(now, taken=(key.kid for key in ring))
    newest = ring.signing_key
    if key.created < newest.created:
        raise KeyRingError(
            f"cannot rotate: now ({_format_time(key.created)}) is before the newest key "
            f"{newest.kid} ({_format_time(newest.created)}); is the clock wrong?"
        )
    return KeyRing([*ring, key])


def remove(ring: KeyRing, kid: str) -> KeyRing:
    if ring.get(kid) is None:
        raise KeyRingError(f"no key with id {kid!r} in the key ring")
    if len(ring) == 1:
        raise KeyRingError(f"refusing to remove {kid}: it is the last key in the ring")
    return KeyRing(key for key in ring if key.kid != kid)


def load_keyring(path: str | os.PathLike[str]) -> KeyRing:
    path = Path(path)
    document = _read_json(path)
    try:
        return KeyRing(_parse_document(document))
    except (KeyRingError, ValueError) as exc:
        raise KeyRingError(f"key ring file {path}: {exc}") from None


def save_keyring(ring: KeyRing, path: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Write atomically (temp file in the same directory, then rename) with mode 0600."""
    path = Path(path)
    data = json.dumps(_to_document(ring), indent=2).encode() + b"\n"
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KeyRingError(f"cannot write key ring file {path}: {exc.strerror}") from None
    try:
        _write_private(fd, data)
        _install(tmp_name, path, overwrite=overwrite)
    except OSError as exc:
        raise KeyRingError(f"cannot write key ring file {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _write_private(fd: int, data: bytes) -> None:
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as tmp:
        tmp.write(data)
        tmp.flush()
        os.fsync(tmp.fileno())


def _install(tmp_name: str, path: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp_name, path)
        return
    # link() fails if the target exists, so "refuse to overwrite" holds even against a concurrent writer.
    try:
        os.link(tmp_name, path)
    except FileExistsError:
        raise KeyRingError(f"key ring file {path} already exists; refusing to overwrite it") from None


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as file:
            _check_mode(path, os.fstat(file.fileno()).st_mode)  # the file read, not a swapped path
            text = file.read().decode("utf-8")
    except FileNotFoundError:
        raise KeyRingError(f"key ring file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KeyRingError(f"cannot read key ring file {path}: {reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Only the position: the decoder's message never quotes the document, but be explicit.
        raise KeyRingError(
            f"key ring file {path} is not valid JSON (line {exc.lineno}, column {exc.colno})"
        ) from None


def _check_mode(path: Path, mode: int) -> None:
    """Refuse a key ring others can read or anyone but its owner can change; warn on group read."""
    if not stat.S_ISREG(mode):
        return  # a directory or device fails on reading, with its own message
    if mode & _REFUSED_BITS:
        raise KeyRingError(
            f"key ring file {path} is readable or writable by other users (mode {stat.S_IMODE(mode):04o});"
            f" anyone who can read or change it can mint tokens: run `chmod 600 {shlex.quote(str(path))}`"
        )
    if mode & _WARNED_BITS:
        logger.warning(
            "key ring file %s is readable by its group (mode %04o): every member can mint tokens;"
            " run `chmod 600 %s` unless that group is the server's own",
            path,
            stat.S_IMODE(mode),
            shlex.quote(str(path)),
        )


def _parse_document(document: Any) -> list[Key]:
    if not isinstance(document, dict):
        raise KeyRingError("top level must be a JSON object")
    if document.get("version") != FILE_VERSION:
        raise KeyRingError(f"unsupported or missing 'version' (expected {FILE_VERSION})")
    if "keys" not in document:
        raise KeyRingError("missing field 'keys'")
    if not isinstance(document["keys"], list):
        raise KeyRingError("'keys' must be a list")
    return [_parse_key(entry, index) for index, entry in enumerate(document["keys"])]


def _parse_key(entry: Any, index: int) -> Key:
    where = f"key #{index}"
    if not isinstance(entry, dict):
        raise KeyRingError(f"{where} must be a JSON object")
    for field in _FIELDS:
        if field not in entry:
            raise KeyRingError(f"{where} is missing field {field!r}")
        if not isinstance(entry[field], str):
            raise KeyRingError(f"{where}: field {field!r} must be a string")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise KeyRingError(f"{where} has unknown field(s): {', '.join(unknown)}")
    try:
        return Key(
            kid=entry["kid"], created=_parse_time(entry["created"]), secret=_b64decode(entry["secret"])
        )
    except ValueError as exc:
        raise KeyRingError(f"{where}: {exc}") from None


def _parse_time(text: str) -> datetime:
    try:
        created = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"'created' is not an ISO 8601 time: {text!r}") from None
    if created.tzinfo is None:
        raise ValueError(f"'created' has no timezone (use a trailing Z): {text!r}")
    return created


def _b64decode(text: str) -> bytes:
    # The message never quotes the value: it is secret.
    if not _B64URL_RE.fullmatch(text):
        raise ValueError("'secret' is not valid base64url")
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except binascii.Error:
        raise ValueError("'secret' is not valid base64url") from None


def _to_document(ring: KeyRing) -> dict[str, Any]:
    keys = [
        {
            "kid": key.kid,
            "created": _format_time(key.created),
            "secret": base64.urlsafe_b64encode(key.secret).decode().rstrip("="),
        }
        for key in ring
    ]
    return {"version": FILE_VERSION, "keys": keys}


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
