"""The official AMP validator, run offline: verdicts, positions, batches and failures to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.campaigns.validator import (
    AmpValidator,
    ValidationError,
    ValidationResult,
    ValidatorFailed,
    ValidatorUnavailable,
    locate,
)
from tests.amp_tools import NOT_INSTALLED, require_amp_validator

BOILERPLATE = "<style amp4email-boilerplate>body{visibility:hidden}</style>"
LIST_SRC = "https://amp.example.test/v1/list?t=abc"


def amp_doc(*, head: str = "", list_src: str = LIST_SRC, boilerplate: str = BOILERPLATE) -> str:
    """A minimal AMP4EMAIL document: one amp-list rendered with an amp-mustache 0.2 template."""
    return f"""<!doctype html>
<html ⚡4email data-css-strict>
<head>
<meta charset="utf-8">
<script async src="https://cdn.ampproject.org/v0.js"></script>
<script async custom-element="amp-list" src="https://cdn.ampproject.org/v0/amp-list-0.1.js"></script>
<script async custom-template="amp-mustache" src="https://cdn.ampproject.org/v0/amp-mustache-0.2.js"></script>
{boilerplate}
{head}
</head>
<body>
<amp-list src="{list_src}" layout="fixed-height" height="120">
  <template type="amp-mustache"><p>{{{{name}}}}: {{{{open_time}}}}</p></template>
</amp-list>
</body>
</html>
"""


@pytest.fixture(scope="module")
def validator() -> AmpValidator:
    # The same lookup as the shared ``amp_validator`` fixture, so this module runs without conftest help.
    return require_amp_validator()


def line_of(doc: str, snippet: str) -> int:
    return next(number for number, line in enumerate(doc.splitlines(), 1) if snippet in line)


EXTERNAL_CSS = '<link rel="stylesheet" href="https://fonts.example.test/a.css">'
IMPORTANT = "<style amp-custom>p{color:red !important}</style>"

INVALID = {
    "external-stylesheet": (amp_doc(head=EXTERNAL_CSS), "DISALLOWED_TAG", "<link"),
    "important": (amp_doc(head=IMPORTANT), "CSS_SYNTAX_DISALLOWED_IMPORTANT", "<style amp-custom>"),
    "relative-list-src": (amp_doc(list_src="/v1/list"), "DISALLOWED_RELATIVE_URL", "<amp-list"),
}


@pytest.fixture(scope="module")
def verdicts(validator: AmpValidator) -> dict[str, ValidationResult]:
    # One node start (~1.2 s) for every case instead of one per test.
    docs = {"valid": amp_doc(), "no-boilerplate": amp_doc(boilerplate="")}
    docs |= {name: doc for name, (doc, _, _) in INVALID.items()}
    return dict(zip(docs, validator.validate_many(list(docs.values())), strict=True))


def test_minimal_amp4email_document_passes(verdicts: dict[str, ValidationResult]) -> None:
    result = verdicts["valid"]
    assert result.passed, result.format()
    assert result.errors == ()


@pytest.mark.parametrize("name", INVALID)
def test_invalid_document_fails_with_position_and_code(
    verdicts: dict[str, ValidationResult], name: str
) -> None:
    doc, code, snippet = INVALID[name]
    result = verdicts[name]
    assert result.status == "FAIL"
    assert [(error.code, error.line, error.severity) for error in result.errors] == [
        (code, line_of(doc, snippet), "ERROR")
    ]
    assert result.errors[0].col >= 0
    assert result.format().startswith(f"{line_of(doc, snippet)}:")


def test_missing_boilerplate_fails(verdicts: dict[str, ValidationResult]) -> None:
    result = verdicts["no-boilerplate"]
    assert not result.passed
    assert "TAG_REQUIRED_BY_MISSING" in {error.code for error in result.errors}
    assert all(error.line >= 1 for error in result.errors)


def test_batch_keeps_document_order(validator: AmpValidator) -> None:
    docs = [
        amp_doc(head=IMPORTANT),
        amp_doc(),
        amp_doc(list_src="/v1/list"),
        amp_doc(),
        amp_doc(head=EXTERNAL_CSS),
    ]
    results = validator.validate_many(docs)
    assert [result.errors[0].code if result.errors else "PASS" for result in results] == [
        "CSS_SYNTAX_DISALLOWED_IMPORTANT",
        "PASS",
        "DISALLOWED_RELATIVE_URL",
        "PASS",
        "DISALLOWED_TAG",
    ]


def test_empty_batch_starts_nothing(tmp_path: Path) -> None:
    assert AmpValidator(tmp_path / "no-node", tmp_path).validate_many([]) == []


def test_a_bare_string_is_not_a_batch(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        AmpValidator(tmp_path / "no-node", tmp_path).validate_many(amp_doc())


def test_empty_tools_dir_is_unavailable(validator: AmpValidator, tmp_path: Path) -> None:
    with pytest.raises(ValidatorUnavailable, match="install-amp-validator"):
        AmpValidator(validator.node, tmp_path).validate(amp_doc())


def test_missing_node_is_unavailable(validator: AmpValidator, tmp_path: Path) -> None:
    with pytest.raises(ValidatorUnavailable):
        AmpValidator(tmp_path / "no-node", validator.tools_dir).validate(amp_doc())


def test_locate_finds_nothing_in_an_empty_project(tmp_path: Path) -> None:
    assert locate(tmp_path) is None
    assert locate(tmp_path, tmp_path / "tools") is None


def fake_tools(tmp_path: Path, module_js: str) -> Path:
    """A tools dir whose amphtml-validator module is a stand-in, to make the real runner misbehave."""
    module_dir = tmp_path / "node_modules" / "amphtml-validator"
    module_dir.mkdir(parents=True)
    (module_dir / "index.js").write_text(module_js)
    (tmp_path / "validator_wasm.js").write_text("")
    return tmp_path


def test_validator_crash_is_reported(validator: AmpValidator, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path, "exports.getInstance = () => Promise.reject(new Error('engine boom'));")
    with pytest.raises(ValidatorFailed, match="engine boom"):
        AmpValidator(validator.node, tools).validate(amp_doc())


def test_validator_hang_times_out(validator: AmpValidator, tmp_path: Path) -> None:
    tools = fake_tools(
        tmp_path, "exports.getInstance = () => new Promise(() => setInterval(() => {}, 1000));"
    )
    with pytest.raises(ValidatorFailed, match="timed out"):
        AmpValidator(validator.node, tools, timeout=1).validate(amp_doc())


def engine_returning(result_js: str) -> str:
    return f"exports.getInstance = async () => ({{validateString: () => ({result_js})}});"


def test_results_come_from_the_installed_engine(validator: AmpValidator, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path, engine_returning("{status: 'PASS', errors: []}"))
    validator = AmpValidator(validator.node, tools)
    assert validator.validate_many([amp_doc(), "not even html"]) == [ValidationResult("PASS")] * 2


def test_unreadable_engine_output_is_a_failure(validator: AmpValidator, tmp_path: Path) -> None:
    tools = fake_tools(tmp_path, engine_returning("{status: 'FAIL', errors: [{line: 'x'}]}"))
    with pytest.raises(ValidatorFailed, match="unreadable"):
        AmpValidator(validator.node, tools).validate(amp_doc())


def test_result_format_lists_one_line_per_error() -> None:
    result = ValidationResult(
        "FAIL",
        (
            ValidationError(
                11, 0, "DISALLOWED_RELATIVE_URL", "The relative URL '/x' is disallowed.", "ERROR"
            ),
            ValidationError(3, 4, "DEPRECATED_TAG", "Old tag.", "WARNING"),
        ),
    )
    assert not result.passed
    assert result.format().splitlines() == [
        "11:0 ERROR DISALLOWED_RELATIVE_URL The relative URL '/x' is disallowed.",
        "3:4 WARNING DEPRECATED_TAG Old tag.",
    ]
    assert ValidationResult("PASS").passed


def test_missing_validator_skips_on_a_developer_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=NOT_INSTALLED):
        require_amp_validator(tmp_path)


def test_missing_validator_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=NOT_INSTALLED):
        require_amp_validator(tmp_path)
