"""The open-time URLs, as a table: each ``/v1/{token}/<segment>/...`` route and the kinds it serves."""

from __future__ import annotations

from app.open_time.kinds import click, countdown, form, html, image, view
from app.open_time.kinds import list as list_kind
from app.open_time.pipeline import Route

ROUTES = (
    Route("list", list_kind.parse, "/v1/{token}/list/{block}.json", (list_kind.ListKind(),), cors=True),
    # Countdown blocks first: both kinds answer on image URLs, and block names are unique per campaign.
    Route(
        "img",
        image.parse,
        "/v1/{token}/img/{block}[@2x].{png|jpg|gif}",
        (countdown.CountdownKind(), image.ImageKind()),
    ),
    Route("html", html.parse, "/v1/{token}/html/{block}", (html.FragmentKind(),)),
    Route("view", view.parse, "/v1/{token}/view", (view.ViewKind(),)),
    Route("click", click.parse, "/v1/{token}/click/{block}/{slot}", (click.ClickKind(),)),
    Route("form", form.parse, "/v1/{token}/form/{block}", (form.FormKind(),), methods=("POST",), cors=True),
)
