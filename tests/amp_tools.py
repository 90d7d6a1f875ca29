"""Node tools for tests: the official AMP validator and mustache.js, located once per session.

A developer without them gets a skip that says how to install them; CI (``CI=true``) gets a failure
instead, so a missing install can never turn these tests into silent skips.
Register the fixtures in a conftest with ``from tests.amp_tools import amp_validator, mustache``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from app.campaigns.validator import AmpValidator, locate
from app.config import PROJECT_ROOT

NOT_INSTALLED = "AMP validator not installed: run tools/install-amp-validator.sh"
MUSTACHE_NOT_INSTALLED = "mustache.js not installed: run tools/install-mustache.sh"
MUSTACHE_RUNNER = Path(__file__).with_name("mustache_runner.js")


def missing_tool(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must run these tests, not skip them)", pytrace=False)
    pytest.skip(message)


def require_amp_validator(project_root: Path = PROJECT_ROOT) -> AmpValidator:
    validator = locate(project_root)
    if validator is not None:
        return validator
    missing_tool(NOT_INSTALLED)


@pytest.fixture(scope="session")
def amp_validator() -> AmpValidator:
    return require_amp_validator()


@dataclass(frozen=True, slots=True)
class Mustache:
    """mustache.js as installed by tools/install-mustache.sh, run by node (one process per batch)."""

    node: str
    module: Path

    def render_many(self, jobs: Sequence[tuple[str, Any]]) -> list[str]:
        """Render each (template, view) pair; results keep the order of ``jobs``."""
        payload = json.dumps([{"template": template, "view": view} for template, view in jobs])
        done = subprocess.run(
            [self.node, str(MUSTACHE_RUNNER), str(self.module)],
            input=payload,
            capture_output=True,
            encoding="utf-8",
            timeout=60,
            check=True,
        )
        rendered: list[str] = json.loads(done.stdout)
        return rendered


def require_mustache(project_root: Path = PROJECT_ROOT) -> Mustache:
    node = shutil.which("node")
    module = project_root / ".tools" / "mustache" / "node_modules" / "mustache"
    if node is None or not (module / "mustache.js").is_file():
        missing_tool(MUSTACHE_NOT_INSTALLED)
    return Mustache(node, module)


@pytest.fixture(scope="session")
def mustache() -> Mustache:
    return require_mustache()
