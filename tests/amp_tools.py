"""The official AMP validator for tests: located once per session.

A developer without the validator gets a skip that says how to install it; CI (``CI=true``) gets a
failure instead, so a missing install can never turn validation tests into silent skips.
Register the fixture in a conftest with ``from tests.amp_tools import amp_validator``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.campaigns.validator import AmpValidator, locate
from app.config import PROJECT_ROOT

NOT_INSTALLED = "AMP validator not installed: run tools/install-amp-validator.sh"


def require_amp_validator(project_root: Path = PROJECT_ROOT) -> AmpValidator:
    validator = locate(project_root)
    if validator is not None:
        return validator
    if os.environ.get("CI") == "true":
        pytest.fail(f"{NOT_INSTALLED} (CI must run the validator, not skip it)", pytrace=False)
    pytest.skip(NOT_INSTALLED)


@pytest.fixture(scope="session")
def amp_validator() -> AmpValidator:
    return require_amp_validator()
