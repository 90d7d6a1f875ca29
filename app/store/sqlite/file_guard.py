"""Notice when the SQLite file under a running store is deleted, replaced or no longer a database.

SQLite keeps writing to the file it opened: deleted, its writes land in an inode nobody will open again
(the next start finds the path empty), and a file replaced at the path (a restore, a bad deploy) is
never seen. Either way a webhook event would be acknowledged and lost. ``FileGuard`` keeps its own
descriptor on the file the store opened and compares it with the path, and reads the 16-byte header
SQLite writes first: a few microseconds, so every write transaction and every readiness probe pays it.

A problem is sticky: the store refuses from then on, until the server is restarted on a good file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from app.store.base import StoreError

logger = logging.getLogger(__name__)

HEADER = b"SQLite format 3\x00"
_WHAT = {
    "deleted": "the database file was deleted",
    "replaced": "another file was put in place of the database file",
    "corrupt": "the database file is no longer a SQLite database (overwritten or corrupt)",
}


class StoreFileError(StoreError):
    """The store's file went away or went bad under the running server; ``reason`` says how."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"sqlite {path}: {_WHAT[reason]} while the server ran; nothing is written or acknowledged"
            " until it is restored and the server restarted"
        )
        self.reason = f"store-{reason}"


class FileGuard:
    """The database file the store opened, watched for deletion, replacement and a broken header."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        opened = os.fstat(self._fd)
        self._identity = (opened.st_dev, opened.st_ino)
        self.problem: str | None = None  # "deleted", "replaced" or "corrupt", once seen

    def check(self) -> None:
        """Raise ``StoreFileError`` if the file is not (any more) the database the store opened."""
        if self.problem is None:
            self.problem = self._inspect()
            if self.problem is not None:
                logger.error(
                    "ALERT sqlite %s: %s; the store refuses writes and /readyz answers 503",
                    self.path,
                    _WHAT[self.problem],
                )
        if self.problem is not None:
            raise StoreFileError(self.path, self.problem)

    def corrupt(self) -> None:
        """SQLite itself found the file malformed: remember it, as if the header had been bad."""
        if self.problem is None:
            self.problem = "corrupt"
            logger.error("ALERT sqlite %s: %s (SQLite says so)", self.path, _WHAT["corrupt"])

    def close(self) -> None:
        os.close(self._fd)

    def _inspect(self) -> str | None:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return "deleted"
        if (now.st_dev, now.st_ino) != self._identity:
            return "replaced"  # the opened file is gone from the path too, but that says less
        if os.pread(self._fd, len(HEADER), 0) != HEADER:
            return "corrupt"
        return None
