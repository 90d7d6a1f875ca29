"""``opentime``: a thin command line over the same core the server uses.

This module only builds the group; each command lives in the module named for it, and shares its
options, settings loading and error exits through ``app.cli.common`` (exit codes are listed there).
"""

from __future__ import annotations

import click

from app.cli.apikeys import apikeys
from app.cli.cdn import cdn
from app.cli.check_config import check_config
from app.cli.db import db
from app.cli.events import events
from app.cli.import_profiles import import_
from app.cli.ingest import ingest
from app.cli.keys import keys, sign, tokens, verify
from app.cli.preview import preview
from app.cli.privacy import erase, erasures, retention
from app.cli.render import render
from app.cli.report import report
from app.cli.serve import serve
from app.cli.validate import validate

COMMANDS: list[click.Command] = [
    check_config,
    keys,
    sign,
    verify,
    tokens,
    import_,
    db,
    render,
    preview,
    validate,
    apikeys,
    cdn,
    events,
    ingest,
    erase,
    erasures,
    retention,
    report,
    serve,
]


@click.group()
@click.version_option(package_name="opentime")
def main() -> None:
    """Opentime: open-time email content server."""


for command in COMMANDS:
    main.add_command(command)
