"""Event validation and rules: pure functions, no store."""

from __future__ import annotations

from typing import Any

import pytest

from app.ingest.events import (
    INT_MAX,
    MAX_FIELDS,
    MAX_RECENT_PURCHASES,
    MAX_RECENTLY_VIEWED,
    BatchError,
    Event,
    Invalid,
    add_numbers,
    apply_event,
    parse_batch,
    parse_event,
    parse_time,
)

NOW = 1_714_557_600.0  # 2024-05-01T10:00:00Z


def ev(type_: str, payload: dict[str, Any], at: str = "2024-05-01T10:00:00Z", id_: str = "e1") -> Event:
    return parse_event(
        {"id": id_, "type": type_, "recipient": "r1", "occurred_at": at, "payload": payload}, now=NOW
    )


def run(events: list[Event], attributes: dict[str, Any] | None = None) -> dict[str, Any]:
    state: tuple[dict[str, Any], dict[str, list[str]]] = (attributes or {}, {})
    for event in events:
        state = apply_event(*state, event)
    return state[0]


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00.000000Z"),
        ("2024-05-01t12:00:00.5+02:00", "2024-05-01T10:00:00.500000Z"),
        ("2024-05-01T10:00:00.123456789Z", "2024-05-01T10:00:00.123456Z"),
    ],
)
def test_times_are_normalised_to_utc(value: str, expected: str) -> None:
    assert parse_time(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value", ["2024-05-01", "2024-05-01T10:00:00", "2024-13-01T10:00:00Z", 1714557600, "2024-05-01T13:00:01Z"]
)
def test_bad_or_far_future_times_are_refused(value: Any) -> None:
    with pytest.raises(Invalid) as info:
        parse_time(value, now=NOW)
    assert info.value.field == "occurred_at"


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_outside_the_representable_range_are_invalid_not_a_crash(value: str) -> None:
    # Attack: year 1 at +01:00 is before year 1 in UTC; astimezone raised OverflowError, a 500.
    with pytest.raises(Invalid) as info:
        parse_time(value, now=NOW)
    assert (info.value.field, info.value.error) == ("occurred_at", "is not a valid date and time")


@pytest.mark.parametrize(
    ("type_", "payload", "field"),
    [
        ("profile.updated", {"totals": {"orders": 18446744073709551615}}, "payload.totals.orders"),
        ("profile.updated", {"n": -(2**63) - 1}, "payload.n"),
        ("profile.updated", {"list": [1, {"x": 2**64}]}, "payload.list[1].x"),
        ("purchase", {"total": 2**63}, "payload.total"),
        ("cart.updated", {"items": [{"sku": "a", "price": 2**70}]}, "payload.items[0].price"),
    ],
)
def test_numbers_the_store_cannot_hold_are_invalid(type_: str, payload: dict[str, Any], field: str) -> None:
    # Attack: totals.orders = 2**64 - 1, then a purchase: orjson could not encode 2**64 and the shared
    # transaction failed for every request in it, on every retry.
    with pytest.raises(Invalid) as info:
        ev(type_, payload)
    assert info.value.field == field


def test_counters_stay_within_64_bits() -> None:
    after = run([ev("purchase", {"total": INT_MAX})], {"totals": {"orders": INT_MAX, "spent": INT_MAX}})
    assert after["totals"] == {"orders": INT_MAX, "spent": INT_MAX}
    assert add_numbers(2**64, 1) == 1  # a stored value out of range counts as 0, like non-numbers
    assert add_numbers(-INT_MAX, -INT_MAX) == -(2**63)
    assert add_numbers(1.7e308, 1.7e308) == 1.7976931348623157e308


def test_profile_update_is_limited_in_fields() -> None:
    # Attack: 30,000 leaves in one event held the single writer for 24 s.
    ev("profile.updated", {f"k{i}": i for i in range(MAX_FIELDS)})
    with pytest.raises(Invalid) as info:
        ev("profile.updated", {"a": {f"k{i}": i for i in range(MAX_FIELDS)}, "b": 1})
    assert (info.value.field, info.value.error) == (
        "payload",
        f"sets {MAX_FIELDS + 1} fields; at most 1000 per event",
    )


def test_writing_a_parent_replaces_its_children_and_loses_to_newer_ones() -> None:
    times: dict[str, list[str]] = {}
    state: tuple[dict[str, Any], dict[str, list[str]]] = ({}, times)
    newer = ev("profile.updated", {"a": {"b": 1, "c": 2}, "ab": 1, "a-": 1}, "2024-05-01T09:00:00Z", "n")
    state = apply_event(*state, newer)
    older = ev("profile.updated", {"a": None}, "2024-05-01T08:00:00Z", "o")
    assert apply_event(*state, older) == state  # a newer child wins over an older parent
    later = ev("profile.updated", {"a": 5}, "2024-05-01T09:30:00Z", "l")
    attributes, times = apply_event(*state, later)
    assert attributes == {"a": 5, "ab": 1, "a-": 1}
    assert sorted(times) == ["a", "a-", "ab"]  # the children's stamps are folded into the parent's


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "a\nb"}, "id"),
        ({"recipient": 5}, "recipient"),
        ({"type": "nope"}, "type"),
        ({"payload": []}, "payload"),
        ({"extra": 1}, "extra"),
        ({"type": "purchase", "payload": {}}, "payload.total"),
        ({"type": "purchase", "payload": {"total": 1, "currency": "euro"}}, "payload.currency"),
        (
            {"type": "cart.updated", "payload": {"items": [{"sku": "a"}, {"name": "x"}]}},
            "payload.items[1].sku",
        ),
        ({"type": "cart.updated", "payload": {"items": [{"sku": "a", "qty": 0}]}}, "payload.items[0].qty"),
        ({"type": "cart.cleared", "payload": {"items": []}}, "payload.items"),
        ({"type": "product.viewed", "payload": {"sku": "a", "colour": "red"}}, "payload.colour"),
        ({"payload": {"a": {"b.c": 1}}}, "payload.a.b.c"),
    ],
)
def test_invalid_events_name_the_field(change: dict[str, Any], field: str) -> None:
    item: dict[str, Any] = {"id": "e", "type": "profile.updated", "recipient": "r", "payload": {}}
    item["occurred_at"] = "2024-05-01T10:00:00Z"
    with pytest.raises(Invalid) as info:
        parse_event({**item, **change}, now=NOW)
    assert info.value.field == field


def test_batch_splits_good_and_bad() -> None:
    good = {"id": "a", "type": "cart.cleared", "recipient": "r", "occurred_at": "2024-05-01T10:00:00Z"}
    events, errors = parse_batch([{**good, "payload": {}}, "x", {**good, "payload": {}, "id": "b"}], now=NOW)
    assert [(i, e.id) for i, e in events] == [(0, "a"), (2, "b")]
    assert [e.as_json() for e in errors] == [{"index": 1, "field": "event", "error": "must be a JSON object"}]


@pytest.mark.parametrize("body", [[], "x", None, [{}] * 1001])
def test_unusable_batches(body: Any) -> None:
    with pytest.raises(BatchError):
        parse_batch(body, now=NOW)


# -- profile.updated ---------------------------------------------------------------------------------


def test_profile_update_merges_and_null_deletes() -> None:
    start = {"first_name": "Ada", "loyalty": {"tier": "gold", "points": 5}, "old": 1}
    after = run([ev("profile.updated", {"loyalty": {"points": 7}, "old": None, "city": "Oslo"})], start)
    assert after == {"first_name": "Ada", "loyalty": {"tier": "gold", "points": 7}, "city": "Oslo"}


def test_apply_event_does_not_mutate_its_arguments() -> None:
    attributes: dict[str, Any] = {"a": {"b": 1}}
    times: dict[str, list[str]] = {}
    apply_event(attributes, times, ev("profile.updated", {"a": {"b": 2}}))
    assert attributes == {"a": {"b": 1}}
    assert times == {}


def test_last_writer_wins_per_field_in_any_order() -> None:
    new = ev("profile.updated", {"tier": "gold", "city": "Oslo"}, "2024-05-01T10:00:00Z", "new")
    old = ev("profile.updated", {"tier": "bronze", "name": "Ada"}, "2024-05-01T09:00:00Z", "old")
    assert run([new, old]) == run([old, new]) == {"tier": "gold", "city": "Oslo", "name": "Ada"}


def test_newer_delete_is_not_undone_by_an_older_set() -> None:
    delete = ev("profile.updated", {"loyalty": None}, "2024-05-01T10:00:00Z", "del")
    older = ev("profile.updated", {"loyalty": {"tier": "gold"}}, "2024-05-01T09:00:00Z", "old")
    assert run([delete, older]) == run([older, delete]) == {}


def test_older_parent_write_does_not_clobber_newer_child() -> None:
    child = ev("profile.updated", {"loyalty": {"tier": "gold"}}, "2024-05-01T10:00:00Z", "child")
    parent = ev("profile.updated", {"loyalty": 5}, "2024-05-01T09:00:00Z", "parent")
    assert run([child, parent]) == run([parent, child]) == {"loyalty": {"tier": "gold"}}


def test_same_time_is_resolved_by_event_id() -> None:
    a = ev("profile.updated", {"x": "a"}, id_="a")
    b = ev("profile.updated", {"x": "b"}, id_="b")
    assert run([a, b]) == run([b, a]) == {"x": "b"}


# -- purchase ----------------------------------------------------------------------------------------


def test_purchase_updates_totals_recent_and_last() -> None:
    first = ev("purchase", {"order_id": "o1", "total": 10.1, "currency": "EUR"}, "2024-05-01T09:00:00Z", "p1")
    second = ev("purchase", {"order_id": "o2", "total": 5.2, "items": [{"sku": "a"}]}, id_="p2")
    after = run([second, first])
    assert after["totals"] == {"orders": 2, "spent": 15.3}
    assert [p["order_id"] for p in after["recent_purchases"]] == ["o2", "o1"]
    assert after["last_purchase"]["order_id"] == "o2"
    assert after["last_purchase"]["occurred_at"] == "2024-05-01T10:00:00.000000Z"
    assert after == run([first, second])


def test_same_order_under_another_event_id_counts_once() -> None:
    a = ev("purchase", {"order_id": "o1", "total": 3}, id_="a")
    b = ev("purchase", {"order_id": "o1", "total": 3}, id_="b")
    assert run([a, b])["totals"] == {"orders": 1, "spent": 3}


def test_recent_purchases_are_bounded() -> None:
    events = [ev("purchase", {"total": 1}, f"2024-04-{d:02d}T00:00:00Z", f"p{d}") for d in range(1, 16)]
    after = run(events)
    assert len(after["recent_purchases"]) == MAX_RECENT_PURCHASES
    assert after["recent_purchases"][0]["order_id"] == "p15"
    assert after["totals"]["orders"] == 15


def test_purchase_survives_junk_in_the_stored_profile() -> None:
    after = run([ev("purchase", {"total": 2})], {"recent_purchases": "junk", "totals": [1]})
    assert after["totals"] == {"orders": 1, "spent": 2}


# -- cart ----------------------------------------------------------------------------------------------


def test_cart_updated_then_cleared() -> None:
    items = [{"sku": "a", "name": "Mug", "price": 14, "qty": 2}]
    updated = ev("cart.updated", {"items": items}, "2024-05-01T09:00:00Z", "u")
    cleared = ev("cart.cleared", {}, "2024-05-01T10:00:00Z", "c")
    assert run([updated])["cart"] == {"items": items}
    assert run([updated, cleared])["cart"] == run([cleared, updated])["cart"] == {"items": []}


# -- product.viewed ------------------------------------------------------------------------------------


def test_recently_viewed_is_deduplicated_newest_first_and_bounded() -> None:
    views = [
        ev("product.viewed", {"sku": f"s{i % 25}"}, f"2024-04-01T00:{i:02d}:00Z", f"v{i}") for i in range(30)
    ]
    after = run(views)
    viewed = after["recently_viewed"]
    assert len(viewed) == MAX_RECENTLY_VIEWED
    assert [v["sku"] for v in viewed[:3]] == ["s4", "s3", "s2"]  # s4 seen again at minute 29
    assert len({v["sku"] for v in viewed}) == len(viewed)
    assert viewed == run(list(reversed(views)))["recently_viewed"]
