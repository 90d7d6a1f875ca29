"""House rules checked in the suite: lint, formatting and strict typing of the app package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.config import PROJECT_ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "app", "tests", "bench"],
        ["ruff", "format", "--check", "app", "tests", "bench"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_code_quality(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
