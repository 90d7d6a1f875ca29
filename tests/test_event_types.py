"""Custom event types declared in TOML: validation at start-up, each operation, ordering, webhooks."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from app.app import create_app
from app.config import Settings, event_rules, load_settings
from app.errors import ConfigError
from app.ingest.event_types import EventTypesError, with_custom_types
from app.ingest.events import Event, Invalid, Rule, apply_event, parse_event
from tests.conftest import BASE_URL
from tests.test_webhooks import SECRET, event, post

NOW = 1_714_557_600.0  # 2024-05-01T10:00:00Z
LOYALTY = """
[types."loyalty.points_earned"]
set = { "loyalty.last_earned_at" = "$occurred_at", "loyalty.tier" = "payload.tier" }
increment = { "loyalty.points" = "payload.points", "loyalty.earn_count" = 1 }
append = { "loyalty.history" = { from = "payload", max = 2 } }
"""
TYPE = "loyalty.points_earned"


def rules(toml: str = LOYALTY) -> dict[str, Rule]:
    return with_custom_types(tomllib.loads(toml))


def ev(payload: dict[str, Any], at: str, id_: str, type_: str = TYPE) -> Event:
    item = {"id": id_, "type": type_, "recipient": "r1", "occurred_at": at, "payload": payload}
    return parse_event(item, now=NOW, rules=rules())


def run(events: list[Event]) -> dict[str, Any]:
    state: tuple[dict[str, Any], dict[str, list[str]]] = ({}, {})
    for item in events:
        state = apply_event(*state, item)
    return state[0]


def earned(n: int, points: int, tier: str = "silver") -> Event:
    return ev({"points": points, "tier": tier}, f"2024-05-01T0{n}:00:00Z", f"e{n}")


# -- declaration errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[types."purchase"]\nset = { "a" = "$id" }', "'purchase': a built-in type cannot be redefined"),
        ('[types."Bad Name"]\nset = { "a" = "$id" }', "'Bad Name': names are lower-case words"),
        ('[types."x.y"]\nreplace = { "a" = "$id" }', "'x.y': unknown operation 'replace'"),
        ('[types."x.y"]', "'x.y': must be a table with at least one of set, increment, append"),
        ('[types."x.y"]\nset = { "a" = "payload..b" }', "'x.y': set.'a': the source must be"),
        ('[types."x.y"]\nset = { "a" = "$now" }', "'x.y': set.'a': the source must be"),
        ('[types."x.y"]\nset = { "a b" = "$id" }', "'x.y': set.'a b': fields are dotted names"),
        ('[types."x.y"]\nincrement = { "n" = "$occurred_at" }', "'x.y': increment.'n': the amount must be"),
        ('[types."x.y"]\nincrement = { "n" = true }', "'x.y': increment.'n': the amount must be"),
        ('[types."x.y"]\nappend = { "h" = "payload" }', "'x.y': append.'h': must be { from = <source>"),
        ('[types."x.y"]\nappend = { "h" = { from = "payload", max = 0 } }', "max must be an integer"),
        ('[types."x.y"]\nset = { "a" = "$id" }\nincrement = { "a.n" = 1 }', "written twice"),
        ("[other]\nx = 1", "expected only a [types."),
    ],
)
def test_declaration_errors_name_the_type_and_operation(toml: str, message: str) -> None:
    with pytest.raises(EventTypesError) as info:
        rules(toml)
    assert message in str(info.value)


def test_a_bad_file_stops_start_up_naming_the_file_and_type(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "events.toml"
    path.write_text('[types."loyalty.earned"]\nincrement = { "points" = "points" }\n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, event_types_file=str(path), **_required(settings))
    assert str(path) in str(info.value) and "'loyalty.earned'" in str(info.value)
    path.write_text("[types\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        event_rules(settings.replace(event_types_file=path))
    with pytest.raises(ConfigError, match="cannot read"):
        event_rules(settings.replace(event_types_file=tmp_path / "missing.toml"))


def _required(settings: Settings) -> dict[str, Any]:
    return {
        "public_base_url": settings.public_base_url,
        "keys_file": str(settings.keys_file),
        "allowed_senders": ",".join(settings.allowed_senders),
    }


# -- validation of events -------------------------------------------------------------------------


def test_events_missing_a_referenced_field_are_invalid() -> None:
    with pytest.raises(Invalid) as info:
        ev({"tier": "gold"}, "2024-05-01T01:00:00Z", "e1")
    assert (info.value.field, info.value.error) == ("payload.points", "is required by this event type")
    with pytest.raises(Invalid, match="finite number"):
        ev({"tier": "gold", "points": "10"}, "2024-05-01T01:00:00Z", "e1")


def test_increments_past_64_bits_are_invalid() -> None:
    # Attack: an increment the store cannot encode used to fail the whole shared commit.
    with pytest.raises(Invalid) as info:
        ev({"tier": "gold", "points": 2**63}, "2024-05-01T01:00:00Z", "e1")
    assert info.value.field == "payload.points"


def test_custom_types_are_unknown_without_their_rules() -> None:
    item = {"id": "e1", "type": TYPE, "recipient": "r1", "occurred_at": "2024-05-01T01:00:00Z", "payload": {}}
    with pytest.raises(Invalid) as info:
        parse_event(item, now=NOW)
    assert info.value.field == "type"


# -- operations --------------------------------------------------------------------------------------


def test_each_operation() -> None:
    loyalty = run([earned(1, 10, "silver"), earned(2, 5, "gold"), earned(3, 1, "gold")])["loyalty"]
    assert loyalty["last_earned_at"] == "2024-05-01T03:00:00.000000Z"
    assert loyalty["tier"] == "gold"
    assert (loyalty["points"], loyalty["earn_count"]) == (16, 3)
    assert [h["points"] for h in loyalty["history"]] == [1, 5]  # newest first, bounded to max = 2
    assert loyalty["history"][0] == {
        "points": 1,
        "tier": "gold",
        "occurred_at": "2024-05-01T03:00:00.000000Z",
        "event_id": "e3",
    }


def test_scalar_appends_and_float_increments() -> None:
    custom = rules('[types."t.x"]\nappend = { "seen" = { from = "$id" } }\nincrement = { "n" = 0.1 }')
    events = [
        parse_event(
            {"id": f"e{i}", "type": "t.x", "recipient": "r", "occurred_at": f"2024-05-01T0{i}:00:00Z"}
            | {"payload": {}},
            now=NOW,
            rules=custom,
        )
        for i in (1, 2, 3)
    ]
    attributes = run(events)
    assert attributes["n"] == 0.3
    assert [h["value"] for h in attributes["seen"]] == ["e3", "e2", "e1"]


def test_arrival_order_does_not_matter() -> None:
    events = [earned(1, 10, "silver"), earned(2, 5, "gold"), earned(3, 1, "bronze")]
    assert run(events) == run(events[::-1]) == run([events[1], events[2], events[0]])


def test_a_newer_delete_beats_older_custom_writes() -> None:
    delete = Event("d1", "profile.updated", "r1", "2024-05-01T02:30:00.000000Z", {"loyalty": None})
    loyalty = run([earned(1, 10), delete, earned(2, 5), earned(3, 1, "gold")])["loyalty"]
    # e1 and e2 predate the delete; e3 is newer and starts afresh.
    assert loyalty["points"] == 1 and loyalty["tier"] == "gold"
    assert [h["event_id"] for h in loyalty["history"]] == ["e3"]
    late = run([earned(1, 10), delete, earned(3, 1, "gold"), earned(2, 5)])["loyalty"]
    assert late == loyalty  # the late old event does not bring anything back


# -- through the webhook endpoint --------------------------------------------------------------------


@pytest.fixture
def custom_hooks(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, Settings]]:
    path = tmp_path / "event_types.toml"
    path.write_text(LOYALTY)
    hook_settings = settings.replace(webhook_secrets=(SECRET,), event_types_file=path)
    with TestClient(create_app(hook_settings), base_url=BASE_URL) as client:
        yield client, hook_settings


def stored(client: TestClient, recipient: str) -> Any:
    """The recipient's attributes, read through the app's own profile repository."""
    assert client.portal is not None
    profile = client.portal.call(client.app_state["services"].store.profiles.get, recipient)
    assert profile is not None
    return orjson.loads(profile.attributes)


def test_webhook_applies_custom_types_and_reports_bad_events(
    custom_hooks: tuple[TestClient, Settings],
) -> None:
    client, _ = custom_hooks
    good = {"type": TYPE, "recipient": "new-member", "payload": {"points": 7, "tier": "gold"}}
    batch = [
        event("c1", **good),
        event("c2", type=TYPE, payload={"tier": "gold"}),
        event("c3", type="loyalty.unknown", payload={}),
        event("c4", **good, occurred_at="2024-05-01T11:00:00Z"),
    ]
    response = post(client, batch)
    assert response.status_code == 207
    body = response.json()
    assert (body["applied"], body["rejected"]) == (2, 2)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "payload.points"), (2, "type")]
    assert TYPE in body["errors"][1]["error"]  # the list of known types includes the custom one
    loyalty = stored(client, "new-member")["loyalty"]
    assert (loyalty["points"], loyalty["earn_count"], loyalty["tier"]) == (14, 2, "gold")
    assert post(client, [event("c1", **good)]).json()["duplicates"] == 1
