"""form blocks: the declaration, field validation, the canonical payload and profile paths (pure)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.campaigns.forms import (
    FormBlock,
    InvalidSubmission,
    ProfileConflict,
    canonical_payload,
    form_block,
    profile_updates,
    set_paths,
    submission_id,
    validate,
)
from app.campaigns.loader import load_campaign
from app.errors import CampaignError

RATE = """
[blocks.rate]
kind = "form"
success_message = "Thanks for your rating!"
[blocks.rate.fields]
rating = { type = "integer", min = 1, max = 5 }
comment = { type = "text", max_length = 20, required = false }
topics = { type = "choice", choices = ["shoes", "outdoor", "socks"], multiple = true, required = false }
size = { type = "choice", choices = ["s", "m", "l"], required = false }
weight = { type = "number", min = 0.5, required = false }
consent = { type = "bool" }
[blocks.rate.profile]
"preferences.topics" = "topics"
last_rating = "rating"
"""


def parse(text: str, name: str = "rate") -> FormBlock:
    spec = tomllib.loads(text)["blocks"][name]
    return form_block(name, spec, f"blocks.toml [blocks.{name}]")


@pytest.fixture
def rate() -> FormBlock:
    return parse(RATE)


def errors(block: FormBlock, pairs: list[tuple[str, str]]) -> dict[str, str]:
    with pytest.raises(InvalidSubmission) as info:
        validate(block, pairs)
    return info.value.errors


def test_declaration_defaults(rate: FormBlock) -> None:
    fields = {f.name: f for f in rate.fields}
    assert rate.success_message == "Thanks for your rating!"
    assert (fields["rating"].required, fields["rating"].min, fields["rating"].max) == (True, 1, 5)
    assert (fields["comment"].required, fields["comment"].max_length) == (False, 20)
    assert fields["consent"].required is False  # an unchecked box is an answer
    assert fields["topics"].multiple and fields["topics"].choices == ("shoes", "outdoor", "socks")
    assert rate.profile == ((("preferences", "topics"), "topics"), (("last_rating",), "rating"))
    plain = parse('[blocks.x]\nkind = "form"\n[blocks.x.fields]\nnote = {}', "x")
    assert (plain.fields[0].type, plain.fields[0].max_length, plain.success_message) == (
        "text",
        500,
        "Thank you!",
    )


def test_nested_profile_keys_mean_dotted_paths() -> None:
    nested = RATE.replace('"preferences.topics" = "topics"', 'preferences.topics = "topics"')
    assert parse(nested).profile == parse(RATE).profile


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('kind = "form"', 'kind = "form"\ncolour = "red"', "unknown key(s) colour"),
        (
            "max_length = 20, required",
            "max_length = 20, min = 1, required",
            'unknown key(s) min for type "text"',
        ),
        ('{ type = "integer"', '{ type = "email"', "no email type"),
        ("max_length = 20", "max_length = 0", "max_length must be an integer from 1 to 2000"),
        ("min = 1, max = 5", "min = 6, max = 5", "min is greater than max"),
        ("min = 1, max = 5", "min = 1.5", "min must be an integer"),
        ('["shoes", "outdoor", "socks"]', "[]", "choices must be a list"),
        ('["shoes", "outdoor", "socks"]', '["a", "a"]', "choices must be unique"),
        ('choices = ["s", "m", "l"]', 'choices = [" s"]', "without surrounding spaces"),
        ("multiple = true", 'multiple = "yes"', "multiple must be true or false"),
        ('{ type = "bool" }', '{ type = "bool", required = "no" }', "required must be true or false"),
        ('last_rating = "rating"', 'last_rating = "stars"', "undeclared field 'stars'"),
        ('last_rating = "rating"', '"preferences" = "rating"', "preferences and preferences.topics overlap"),
        ('last_rating = "rating"', '"a..b" = "rating"', "not a dotted attribute path"),
        ('last_rating = "rating"', "last_rating = 3", "must name a field"),
        ("rating = {", "Rating = {", "field names must match"),
        ('success_message = "Thanks for your rating!"', "success_message = 3", "success_message"),
    ],
)
def test_declaration_errors_name_the_block(old: str, new: str, message: str) -> None:
    assert old in RATE
    with pytest.raises(CampaignError, match=r"\[blocks\.rate\]") as info:
        parse(RATE.replace(old, new))
    assert message in str(info.value)


def test_form_needs_fields() -> None:
    with pytest.raises(CampaignError, match=r"\[blocks.x\].fields: expected a table"):
        parse('[blocks.x]\nkind = "form"', "x")
    with pytest.raises(CampaignError, match="declare from 1 to 20 fields"):
        parse('[blocks.x]\nkind = "form"\n[blocks.x.fields]', "x")


def test_campaign_loads_form_blocks_next_to_lists(tmp_path: Path) -> None:
    folder = tmp_path / "amp" / "spring"
    folder.mkdir(parents=True)
    (folder / "blocks.toml").write_text(RATE)
    campaign = load_campaign(
        folder, tmp_path, default_budget_ms=150, public_base_url="https://amp.example.com"
    )
    assert set(campaign.forms) == {"rate"} and not campaign.lists
    (folder / "blocks.toml").write_text(RATE.replace('kind = "form"', 'kind = "poll"'))
    with pytest.raises(CampaignError, match=r"spring/blocks.toml \[blocks.rate\]: .*supported: list, form"):
        load_campaign(folder, tmp_path, default_budget_ms=150, public_base_url="https://amp.example.com")


def test_valid_submission_fills_every_declared_field(rate: FormBlock) -> None:
    values = validate(rate, [("rating", " 4 "), ("__amp_source_origin", "x@y.z"), ("extra", "ignored")])
    assert values == {
        "rating": 4,
        "comment": None,
        "topics": [],
        "size": None,
        "weight": None,
        "consent": False,
    }


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], {"rating": "is required"}),
        ([("rating", "")], {"rating": "is required"}),
        ([("rating", "6")], {"rating": "must be an integer from 1 to 5"}),
        ([("rating", "4.5")], {"rating": "must be an integer from 1 to 5"}),
        ([("rating", "1e3")], {"rating": "must be an integer from 1 to 5"}),
        ([("rating", "3"), ("rating", "4")], {"rating": "expects a single value"}),
        ([("rating", "3"), ("comment", "x" * 21)], {"comment": "must be at most 20 characters"}),
        ([("rating", "3"), ("comment", "a\x00b")], {"comment": "contains control characters"}),
        ([("rating", "3"), ("size", "xl")], {"size": "must be one of: s, m, l"}),
        ([("rating", "3"), ("topics", "hats")], {"topics": "must be among: shoes, outdoor, socks"}),
        ([("rating", "3"), ("weight", "0.1")], {"weight": "must be a number of at least 0.5"}),
        ([("rating", "3"), ("weight", "nan")], {"weight": "must be a number of at least 0.5"}),
        ([("rating", "3"), ("consent", "maybe")], {"consent": "must be checked or unchecked"}),
        (
            [("rating", "x"), ("size", "xl")],
            {"rating": "must be an integer from 1 to 5", "size": "must be one of: s, m, l"},
        ),
    ],
)
def test_invalid_fields_each_get_a_message(
    rate: FormBlock, pairs: list[tuple[str, str]], expected: dict[str, str]
) -> None:
    assert errors(rate, pairs) == expected


def test_values_per_type(rate: FormBlock) -> None:
    values = validate(
        rate,
        [
            ("rating", "+5"),
            ("comment", "  Gr\u0065\u0301at\r\nshoes\t "),
            ("topics", "socks"),
            ("topics", "shoes"),
            ("topics", "socks"),
            ("size", "m"),
            ("weight", "2.0"),
            ("consent", "on"),
        ],
    )
    assert values["rating"] == 5
    assert values["comment"] == "Gr\u00e9at\nshoes"  # NFC, CRLF folded, trimmed
    assert values["topics"] == ["shoes", "socks"]  # declaration order, no duplicates
    assert (values["size"], values["weight"], values["consent"]) == ("m", 2, True)
    assert validate(rate, [("rating", "1"), ("weight", ".75")])["weight"] == 0.75


@pytest.mark.parametrize(
    ("raw", "checked"), [("on", True), ("TRUE", True), ("1", True), ("0", False), ("", False)]
)
def test_checkbox_values(raw: str, checked: bool) -> None:
    block = parse('[blocks.x]\nkind = "form"\n[blocks.x.fields]\nok = { type = "bool" }', "x")
    assert validate(block, [("ok", raw)]) == {"ok": checked}


def test_required_checkbox_and_required_multiple_choice() -> None:
    block = parse(
        '[blocks.x]\nkind = "form"\n[blocks.x.fields]\nok = { type = "bool", required = true }\n'
        't = { type = "choice", choices = ["a", "b"], multiple = true }',
        "x",
    )
    assert errors(block, [("ok", "off")]) == {"ok": "must be checked", "t": "choose at least one"}
    assert validate(block, [("ok", "on"), ("t", "b"), ("t", "a")]) == {"ok": True, "t": ["a", "b"]}


def test_canonical_payload_and_id_ignore_field_order(rate: FormBlock) -> None:
    one = validate(rate, [("rating", "4"), ("topics", "shoes"), ("topics", "outdoor"), ("size", "s")])
    two = validate(rate, [("size", "s"), ("topics", "outdoor"), ("rating", "04"), ("topics", "shoes")])
    assert canonical_payload(one) == canonical_payload(two)
    assert orjson.loads(canonical_payload(one))["topics"] == ["shoes", "outdoor"]
    ids = {submission_id("demo", "rate", "cust-1", canonical_payload(v)) for v in (one, two)}
    assert len(ids) == 1 and len(ids.pop()) == 64


def test_submission_id_separates_its_parts() -> None:
    payload = canonical_payload({"rating": 4})
    base = submission_id("demo", "rate", "cust-1", payload)
    assert base != submission_id("demo", "rate", "cust-2", payload)
    assert base != submission_id("demo", "rates", "cust-1", payload)
    # "ab" + "c" must not collide with "a" + "bc".
    assert submission_id("ab", "c", "r", payload) != submission_id("a", "bc", "r", payload)
    assert base != submission_id("demo", "rate", "cust-1", canonical_payload({"rating": 5}))


def test_profile_updates_skip_absent_answers(rate: FormBlock) -> None:
    values = validate(rate, [("rating", "3")])
    assert profile_updates(rate, values) == [(("preferences", "topics"), []), (("last_rating",), 3)]
    block = parse(RATE.replace('last_rating = "rating"', 'last_size = "size"'))
    assert profile_updates(block, validate(block, [("rating", "3")])) == [(("preferences", "topics"), [])]


def test_set_paths_creates_objects_and_reports_changes() -> None:
    attributes: dict[str, Any] = {"first_name": "Ada", "preferences": {"lang": "en"}}
    updates = [(("preferences", "topics"), ["shoes"]), (("loyalty", "last_rating"), 4)]
    assert set_paths(attributes, updates) is True
    assert attributes == {
        "first_name": "Ada",
        "preferences": {"lang": "en", "topics": ["shoes"]},
        "loyalty": {"last_rating": 4},
    }
    assert set_paths(attributes, updates) is False
    assert set_paths({"ok": 1}, [(("ok",), True)]) is True  # True == 1 in Python, not in JSON


def test_set_paths_refuses_to_cross_a_non_object() -> None:
    attributes: dict[str, Any] = {"preferences": "none", "a": 1}
    with pytest.raises(ProfileConflict):
        set_paths(attributes, [(("a",), 2), (("preferences", "topics"), ["x"])])
    assert attributes == {"preferences": "none", "a": 1}  # untouched
