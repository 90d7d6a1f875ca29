"""The official AMP validator (``AMP4EMAIL`` format), run offline through node.

This is the only module that starts node. ``tools/install-amp-validator.sh`` installs the npm package
``amphtml-validator`` and its engine ``validator_wasm.js`` into ``.tools/amp-validator/``;
``validator_runner.js`` (beside this file) validates a whole batch per node start, since starting node
and the wasm engine costs about a second while one document takes milliseconds.

Exception tree::

    OpentimeError
    └── AmpValidatorError
        ├── ValidatorUnavailable   node or the installed validator is missing
        └── ValidatorFailed        node ran but crashed, timed out or printed unreadable output
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import OpentimeError

RUNNER = Path(__file__).with_name("validator_runner.js")
TOOLS_SUBDIR = Path(".tools") / "amp-validator"
INSTALL_HINT = "run tools/install-amp-validator.sh"
DEFAULT_TIMEOUT = 60.0


class AmpValidatorError(OpentimeError):
    """Base class for failures to run the AMP validator (not for invalid documents)."""


class ValidatorUnavailable(AmpValidatorError):
    """node or the installed validator files are missing."""


class ValidatorFailed(AmpValidatorError):
    """The validator ran but crashed, timed out or printed output we cannot read."""


@dataclass(frozen=True, slots=True)
class ValidationError:
    """One finding; ``line`` is 1-based and ``col`` 0-based, as the validator reports them."""

    line: int
    col: int
    code: str
    message: str
    severity: str
    spec_url: str | None = None

    def format(self) -> str:
        return f"{self.line}:{self.col} {self.severity} {self.code} {self.message}"


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The verdict on one document: ``status`` is ``PASS`` or ``FAIL`` (warnings do not fail)."""

    status: str
    errors: tuple[ValidationError, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "PASS"

    def format(self) -> str:
        """One ``line:col severity code message`` line per finding."""
        return "\n".join(error.format() for error in self.errors)


class AmpValidator:
    """The validator as installed in *tools_dir*, run by the *node* binary."""

    def __init__(self, node: Path | str, tools_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.node = Path(node)
        self.tools_dir = tools_dir
        self.timeout = timeout

    @property
    def validator_js(self) -> Path:
        return self.tools_dir / "validator_wasm.js"

    @property
    def module_dir(self) -> Path:
        return self.tools_dir / "node_modules" / "amphtml-validator"

    def missing(self) -> list[Path]:
        """The files this validator needs that are not there (empty when it can run)."""
        needed = [self.node, RUNNER, self.validator_js, self.module_dir / "index.js"]
        return [path for path in needed if not path.is_file()]

    def validate(self, doc: str) -> ValidationResult:
        return self.validate_many([doc])[0]

    def validate_many(self, docs: Sequence[str]) -> list[ValidationResult]:
        """Validate every document with one node process; results keep the order of *docs*."""
        if isinstance(docs, str):
            raise TypeError("validate_many() takes a sequence of documents; use validate() for one")
        if not docs:
            return []
        if missing := self.missing():
            names = ", ".join(str(path) for path in missing)
            raise ValidatorUnavailable(f"AMP validator unavailable, missing {names}: {INSTALL_HINT}")
        return _parse_results(self._run(json.dumps(list(docs))), len(docs))

    def _run(self, payload: str) -> str:
        command = [str(self.node), str(RUNNER), str(self.validator_js), str(self.module_dir)]
        try:
            done = subprocess.run(
                command, input=payload, capture_output=True, encoding="utf-8", timeout=self.timeout
            )
        except OSError as exc:
            raise ValidatorUnavailable(f"cannot start {self.node}: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise ValidatorFailed(f"AMP validator timed out after {self.timeout:g} s") from exc
        if done.returncode != 0:
            raise ValidatorFailed(f"AMP validator exited with {done.returncode}: {done.stderr.strip()}")
        return done.stdout


def locate(
    project_root: Path, tools_dir: Path | None = None, *, node: Path | str = "node"
) -> AmpValidator | None:
    """The validator installed in *tools_dir* (default ``<project_root>/.tools/amp-validator``).

    Returns None when node is not found (a bare name is looked up on PATH) or the install is incomplete.
    """
    node_path = shutil.which(str(node))
    if node_path is None:
        return None
    validator = AmpValidator(node_path, tools_dir or project_root / TOOLS_SUBDIR)
    return None if validator.missing() else validator


def _parse_results(output: str, expected: int) -> list[ValidationResult]:
    try:
        raw = json.loads(output)
        if not isinstance(raw, list) or len(raw) != expected:
            raise ValueError(f"expected a JSON array of {expected} results")
        return [_parse_result(item) for item in raw]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValidatorFailed(f"unreadable AMP validator output: {exc!r}") from exc


def _parse_result(raw: dict[str, Any]) -> ValidationResult:
    errors = tuple(_parse_error(error) for error in raw["errors"])
    return ValidationResult(status=str(raw["status"]), errors=errors)


def _parse_error(raw: dict[str, Any]) -> ValidationError:
    return ValidationError(
        line=int(raw["line"]),
        col=int(raw["col"]),
        code=str(raw["code"]),
        message=str(raw["message"]),
        severity=str(raw["severity"]),
        spec_url=str(raw["specUrl"]) if raw.get("specUrl") else None,
    )
