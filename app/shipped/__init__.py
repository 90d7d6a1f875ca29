"""Where the campaigns and static assets that come with Opentime are.

In a source checkout (editable install, ``python3 -m app``) they are the repository's top-level
``amp_templates/`` and ``static/``: that layout is the one the design card shows and senders copy.
A wheel (``pip install .``, the container image) has no checkout beside it, so ``setup.py`` copies
both folders into this package when it builds one; the defaults of ``templates_dir`` and
``static_dir`` resolve to whichever is there, and the settings still override them.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
SHIPPED = ("amp_templates", "static")


def shipped(name: str) -> Path:
    """The folder ``name`` (one of ``SHIPPED``): the checkout's own, else the copy in the package."""
    in_checkout = CHECKOUT / name
    if (CHECKOUT / "pyproject.toml").is_file() and in_checkout.is_dir():
        return in_checkout
    return HERE / name
