"""Build hook: a wheel carries the shipped campaigns and static assets (see ``app/shipped``).

Everything else about the package is declared in pyproject.toml. The repository keeps
``amp_templates/`` and ``static/`` at its top level; this copies them into ``app/shipped/`` of the
build, so an installed package runs the demo and the example campaigns from any folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("amp_templates", "static")  # the same names as app.shipped.SHIPPED


class BuildWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the checkout's own folders
        for name in SHIPPED:
            shutil.copytree(ROOT / name, Path(self.build_lib) / "app" / "shipped" / name, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithShipped})
