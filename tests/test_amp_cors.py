import pytest

from app.security.amp_cors import CorsDecision, SenderPolicy, decide

POLICY = SenderPolicy(
    [
        "news@example.com",
        "*@corp.example",
        "@mail.example.net",
        "*@*.shop.example",
        "https://amp.example.com",
    ]
)
GMAIL = b"https://mail.google.com"
V1_EXTRA = [
    (b"access-control-expose-headers", b"AMP-Access-Control-Allow-Source-Origin"),
    (b"access-control-allow-credentials", b"true"),
]


# --- SenderPolicy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sender", "allowed"),
    [
        ("news@example.com", True),  # exact address
        ("NEWS@Example.COM", True),  # case-insensitive
        ("other@example.com", False),  # exact entry does not open the domain
        ("news@sub.example.com", False),
        ("anyone@corp.example", True),  # *@domain
        ("anyone@sub.corp.example", False),  # ...but not its subdomains
        ("x@mail.example.net", True),  # @domain form
        ("x@a.shop.example", True),  # *@*.domain: any subdomain
        ("x@a.b.shop.example", True),
        ("x@shop.example", False),  # ...but not the apex
        ("x@evilshop.example", False),  # suffix must start at a label boundary
        ("https://amp.example.com", True),  # exact origin (Yahoo sent URLs)
        ("HTTPS://AMP.example.com/", True),
        ("https://amp.example.com/path", False),
        ("https://amp.example.com.evil.test", False),
        ("http://amp.example.com", False),
        ("", False),
        ("example.com", False),
        ("@corp.example", False),  # empty local part
        ("news@", False),
        ("news@example.com@evil.test", False),
    ],
)
def test_policy_allows(sender: str, allowed: bool) -> None:
    assert POLICY.allows(sender) is allowed


@pytest.mark.parametrize(
    "sender",
    [
        # Attack: a list or display-name form whose last domain is allowed; echoing it back would
        # "authorise" evil@attacker.test as well.
        "evil@attacker.test, x@corp.example",
        "Evil <x@corp.example>",
        '"a@b"@corp.example',
        # Attack: a wildcard in the sender itself matching the subdomain suffix.
        "x@*.shop.example",
        "x@.shop.example",
        # Attack: Unicode case folding: KELVIN SIGN lowercases to ASCII "k", then would be echoed
        # (and fail to encode) as a header value.
        "\u212a@corp.example",
        "news@example.com\r\nSet-Cookie: a=b",
    ],
)
def test_policy_rejects_smuggled_senders(sender: str) -> None:
    assert not POLICY.allows(sender)
    assert not SenderPolicy(["*"]).allows(sender)


def test_policy_star_allows_any_plain_sender() -> None:
    star = SenderPolicy(["*"])
    assert star.allows("someone@anywhere.test")
    assert star.allows("https://whatever.test")


def test_policy_empty_allows_nothing() -> None:
    assert not SenderPolicy([]).allows("news@example.com")


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "   ",
        "example.com",  # bare domain: ambiguous, must be written *@example.com
        "news@",
        "news@example",  # single label
        "*@*.com",  # every .com sender
        "*@*",
        "n*s@example.com",
        "news@*.example.com",
        "*@ex*ample.com",
        "a@b@example.com",
        "news@-bad.example.com",
        "Name <news@example.com>",
        "https://",
        "https://amp.example.com/path",
        "https://amp.example.com?q=1",
        "https://user@amp.example.com",
        "https://amp.example.com:notaport",
        "ftp://amp.example.com",
    ],
)
def test_policy_invalid_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="invalid AMP sender allowlist entry"):
        SenderPolicy(["news@example.com", entry])


def test_policy_cache_is_bounded() -> None:
    policy = SenderPolicy(["*@corp.example"], cache_size=8)
    for i in range(100):
        assert policy.allows(f"u{i}@corp.example")
    assert len(policy._cache) <= 8


# --- decide ---------------------------------------------------------------------------------------------


def _v1(origin: bytes, source: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"access-control-allow-origin", origin),
        (b"amp-access-control-allow-source-origin", source),
        *V1_EXTRA,
    ]


ALLOWED_CASES = [
    # Gmail v1: exactly the four headers, Origin and source origin echoed.
    (
        [(b"origin", GMAIL)],
        b"__amp_source_origin=news%40example.com",
        1,
        _v1(GMAIL, b"news@example.com"),
    ),
    # Extra client-added parameters (token, GET form fields) are tolerated.
    (
        [(b"origin", GMAIL)],
        b"t=abc.def&q=a+b&__amp_source_origin=news%40example.com&page=2",
        1,
        _v1(GMAIL, b"news@example.com"),
    ),
    # Source origin echoed as sent (case kept), authorised case-insensitively.
    (
        [(b"origin", GMAIL)],
        b"__amp_source_origin=News%40Example.com",
        1,
        _v1(GMAIL, b"News@Example.com"),
    ),
    # Yahoo: Origin null and a URL source origin that is on the allowlist.
    (
        [(b"origin", b"null")],
        b"__amp_source_origin=https%3A%2F%2Famp.example.com",
        1,
        _v1(b"null", b"https://amp.example.com"),
    ),
    # v2: only AMP-Email-Allow-Sender, the exact value echoed, no Access-Control-*.
    (
        [(b"amp-email-sender", b"News@Example.com")],
        b"",
        2,
        [(b"amp-email-allow-sender", b"News@Example.com")],
    ),
    # Both schemes: v2 wins and the v1 parts are ignored (even a disallowed source origin).
    (
        [(b"origin", GMAIL), (b"amp-email-sender", b"x@corp.example")],
        b"__amp_source_origin=evil%40attacker.test",
        2,
        [(b"amp-email-allow-sender", b"x@corp.example")],
    ),
    # Header names are case-insensitive (ASGI lowercases, but the function must not rely on it).
    ([(b"AMP-Email-Sender", b"x@corp.example")], b"", 2, [(b"amp-email-allow-sender", b"x@corp.example")]),
    (
        [(b"Origin", GMAIL)],
        b"__amp_source_origin=news%40example.com",
        1,
        _v1(GMAIL, b"news@example.com"),
    ),
]


@pytest.mark.parametrize(("headers", "query", "version", "expected"), ALLOWED_CASES)
def test_decide_allowed(
    headers: list[tuple[bytes, bytes]], query: bytes, version: int, expected: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"host", b"api.example.com"), *headers, (b"accept", b"application/json")]
    assert decide("GET", headers, query, POLICY) == CorsDecision(True, expected, version)  # type: ignore[arg-type]


REJECTED_CASES = [
    # No __amp_source_origin and no sender header: @ampproject/toolbox-cors passes such a request through
    # untouched; we reject, because these endpoints serve only AMP email clients.
    ([], b""),
    ([], b"t=abc"),
    # Query param but no Origin: toolbox answers 400; we answer 403 like every other rejection.
    ([], b"__amp_source_origin=news%40example.com"),
    # Origin but no __amp_source_origin: no sender to authorise.
    ([(b"origin", GMAIL)], b"t=abc"),
    # Source origin not on the allowlist (toolbox's pattern mismatch -> 403).
    ([(b"origin", GMAIL)], b"__amp_source_origin=evil%40attacker.test"),
    # Attack: a second source origin hoping one check and the other echo; ambiguous -> reject.
    (
        [(b"origin", GMAIL)],
        b"__amp_source_origin=news%40example.com&__amp_source_origin=evil%40attacker.test",
    ),
    ([(b"origin", GMAIL)], b"__amp_source_origin=news%40example.com&%5F%5Famp_source_origin=x%40y.test"),
    ([(b"origin", GMAIL)], b"__amp_source_origin="),
    ([(b"origin", GMAIL)], b"__amp_source_origin"),
    ([(b"origin", GMAIL)], b"__amp_source_origin=%FF%40example.com"),  # not UTF-8
    ([(b"origin", GMAIL)], b"__amp_source_origin=news\xff%40example.com"),  # raw non-ASCII
    # Empty or repeated Origin, or one that would be echoed with control characters.
    ([(b"origin", b"")], b"__amp_source_origin=news%40example.com"),
    ([(b"origin", GMAIL), (b"origin", b"null")], b"__amp_source_origin=news%40example.com"),
    ([(b"origin", b"https://a.test\r\nx: y")], b"__amp_source_origin=news%40example.com"),
    # v2 sender not allowed; v2 wins, so a valid v1 request alongside does not rescue it.
    ([(b"amp-email-sender", b"evil@attacker.test")], b""),
    (
        [(b"amp-email-sender", b"evil@attacker.test"), (b"origin", GMAIL)],
        b"__amp_source_origin=news%40example.com",
    ),
    ([(b"amp-email-sender", b"")], b""),
    # Attack: two sender headers, one allowed; which one a proxy keeps is unknowable -> reject.
    ([(b"amp-email-sender", b"news@example.com"), (b"amp-email-sender", b"evil@attacker.test")], b""),
    # Attack: latin-1 bytes that must never be echoed back as a sender.
    ([(b"amp-email-sender", b"n\xe9ws@example.com")], b""),
]


@pytest.mark.parametrize(("headers", "query"), REJECTED_CASES)
def test_decide_rejected(headers: list[tuple[bytes, bytes]], query: bytes) -> None:
    decision = decide("POST", headers, query, POLICY)
    assert not decision.allowed
    assert decision.response_headers == []
    assert decision.version == 0


def test_decide_options_adds_preflight_headers_for_v1_only() -> None:
    v1 = decide("OPTIONS", [(b"origin", GMAIL)], b"__amp_source_origin=news%40example.com", POLICY)
    assert v1.response_headers[4:] == [
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", b"Content-Type"),
    ]
    v2 = decide("OPTIONS", [(b"amp-email-sender", b"news@example.com")], b"", POLICY)
    assert v2.response_headers == [(b"amp-email-allow-sender", b"news@example.com")]
