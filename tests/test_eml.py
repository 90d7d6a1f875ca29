"""The .eml a campaign becomes: complete headers, read back intact by Python and by npm mailparser, and
an AMP part that still passes the official validator after the round trip."""

from __future__ import annotations

import time

from app.campaigns.validator import AmpValidator
from app.render.addresses import parse_mailbox
from app.render.email import EmailParts, address_warnings, to_message
from app.security.tokens import TokenSigner
from tests.eml_checks import assert_complete, assert_mailparser_agrees, contents, lf, read_strict
from tests.node_tools import NodeTools
from tests.test_sendtime import sendtime as shipped_sendtime
from tests.test_shipped_campaigns_valid import EMAIL_CAMPAIGNS, HOSTILE, sample_profiles

SENDER = parse_mailbox("Example Outfitters <news@example.com>")
LONG_LINE = "https://shop.example.com/p/" + "x" * 1500  # over the 998-octet line limit of RFC 5322
# Text that trips naive MIME writers: "From " at a line start, a lone dot, "=", tabs, trailing spaces.
AWKWARD = f"From here on\n.\na=b =3D\tc  \n{LONG_LINE}\n{HOSTILE}\n"


def awkward_parts() -> EmailParts:
    amp = f"<!doctype html><html ⚡4email><body><p>{AWKWARD}</p></body></html>\n"
    html = f"<!doctype html><html><body><p>{AWKWARD}</p></body></html>\n"
    subject = "Zoë 🎉, " + "a very long subject line that has to be folded over several lines " * 2
    return EmailParts(subject.strip(), AWKWARD, amp, html)


def test_every_header_is_there_once_and_the_message_id_is_on_the_senders_domain() -> None:
    now = time.time()
    raw = bytes(to_message(awkward_parts(), sender=SENDER, to=parse_mailbox("ada@example.org"), now=now))
    message = read_strict(raw)
    assert_complete(message, now=now, to=True)
    assert message["From"] == "Example Outfitters <news@example.com>"
    assert message["To"] == "ada@example.org"
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Date"].datetime.utcoffset().total_seconds() == 0


def test_without_a_to_the_message_has_no_to_header() -> None:
    message = read_strict(bytes(to_message(awkward_parts(), sender=SENDER, to=None, now=time.time())))
    assert_complete(message, now=time.time(), to=False)


def test_message_ids_differ_and_use_the_idna_form_of_an_international_sender() -> None:
    sender = parse_mailbox("Bücherei <news@Bücher.example>")
    messages = [to_message(awkward_parts(), sender=sender, to=None, now=time.time()) for _ in "ab"]
    ids = {str(message["Message-ID"]) for message in messages}
    assert len(ids) == 2
    assert all(i.endswith("@xn--bcher-kva.example>") and i.isascii() for i in ids)


def test_awkward_parts_come_back_intact_from_both_parsers(node_tools: NodeTools) -> None:
    parts = awkward_parts()
    to = parse_mailbox('"Zoë Ünïcode, Esq." <zoe@bücher.example>')
    raw = bytes(to_message(parts, sender=SENDER, to=to, now=time.time()))
    message = read_strict(raw)
    assert contents(message) == [lf(parts.text), lf(parts.amp), lf(parts.html)]
    assert str(message["Subject"]) == parts.subject
    assert message["To"].addresses[0].display_name == "Zoë Ünïcode, Esq."
    assert message["To"].addresses[0].domain == "xn--bcher-kva.example"
    [seen] = assert_mailparser_agrees(node_tools, [raw])
    assert seen["to"] == [{"name": "Zoë Ünïcode, Esq.", "address": "zoe@bücher.example"}]


def test_shipped_campaigns_survive_the_round_trip_and_stay_valid_amp(
    signer: TokenSigner, node_tools: NodeTools, amp_validator: AmpValidator
) -> None:
    # One batch for all campaigns and profiles: one node start for mailparser, one for the validator.
    rendered = shipped_sendtime(signer)
    to = parse_mailbox("Ada <ada@example.org>")
    raws = {}
    for campaign in EMAIL_CAMPAIGNS:
        sender = rendered.campaigns[campaign].sender
        assert sender is not None, f"shipped campaign {campaign} declares no from"
        for label, profile in sample_profiles().items():  # typical, other, empty, unknown, hostile
            parts = rendered.render(campaign, f"r-{label}", profile)
            raw = bytes(to_message(parts, sender=sender, to=to, now=time.time()))
            message = read_strict(raw)
            assert_complete(message, now=time.time(), to=True)
            assert contents(message) == [lf(parts.text), lf(parts.amp), lf(parts.html)]
            raws[f"{campaign}/{label}"] = raw
    assert_mailparser_agrees(node_tools, list(raws.values()))  # so it read these same AMP parts
    results = amp_validator.validate_many([contents(read_strict(raw))[1] for raw in raws.values()])
    failures = {label: r.format() for label, r in zip(raws, results, strict=True) if not r.passed}
    assert not failures, failures


def test_from_equal_to_to_is_warned_about() -> None:
    assert address_warnings(SENDER, parse_mailbox("Me <NEWS@example.com>")) == [
        "From and To are the same address (news@example.com): "
        "Gmail shows the HTML part, not the AMP part, when sender and recipient are the same"
    ]
    assert address_warnings(SENDER, parse_mailbox("ada@example.org")) == []
    assert address_warnings(SENDER, None) == []
