"""Node tools the tests run: npm ``mailparser`` (a second MIME parser) and ``liquidjs`` (Shopify Liquid).

Installed by ``tools/install-node-test-tools.sh`` into ``.tools/node-test/``; the scripts that drive
them are in ``tests/node/``. As with the AMP validator (``tests/amp_tools.py``), a developer without
them gets a skip that says how to install them, and CI (``CI=true``) gets a failure, so a missing
install never turns these tests into silent skips. Register the fixture in a conftest with
``from tests.node_tools import node_tools``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config import PROJECT_ROOT

MODULES = PROJECT_ROOT / ".tools" / "node-test" / "node_modules"
SCRIPTS = Path(__file__).with_name("node")
PACKAGES = ("mailparser", "liquidjs")
NOT_INSTALLED = "node test tools not installed: run tools/install-node-test-tools.sh"
TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class NodeTools:
    node: str
    modules: Path

    def run(self, script: str, stdin: bytes) -> bytes:
        done = subprocess.run(
            [self.node, str(SCRIPTS / script), str(self.modules)],
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"{script} failed: {done.stderr.decode(errors='replace')}"
        return done.stdout

    def parse_emls(self, raws: list[bytes]) -> list[dict[str, Any]]:
        """What mailparser's ``simpleParser`` reads in each message (see tests/node/parse_eml.js)."""
        payload = orjson.dumps([raw.decode("ascii") for raw in raws])
        parsed: list[dict[str, Any]] = orjson.loads(self.run("parse_eml.js", payload))
        assert len(parsed) == len(raws)
        return parsed

    def render_liquid(self, template: str, context: dict[str, Any]) -> str:
        """The template rendered by LiquidJS, strict about unknown filters and variables."""
        payload = orjson.dumps({"template": template, "context": context})
        return self.run("render_liquid.js", payload).decode()


def require_node_tools() -> NodeTools:
    node = shutil.which("node")
    if node is not None and all((MODULES / name / "package.json").is_file() for name in PACKAGES):
        return NodeTools(node, MODULES)
    if os.environ.get("CI") == "true":
        pytest.fail(f"{NOT_INSTALLED} (CI must run them, not skip them)", pytrace=False)
    pytest.skip(NOT_INSTALLED)


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    return require_node_tools()
