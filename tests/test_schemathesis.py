"""Schemathesis against a real ``opentime serve``: generated requests for every documented operation,
valid and invalid, and every answer checked against the OpenAPI document.

The server runs with a real key ring, an admin API key and a webhook secret; webhook bodies are
signed with the real HMAC over the exact bytes sent, so valid events reach the handler and are
applied (not only refused with a 401). Bounded and reproducible: hypothesis is derandomized (a fixed
seed per test), the example database is off and the number of examples per operation is fixed.

Checks: every built-in schemathesis check except ``positive_data_acceptance``, which wants any
request valid against the schema to succeed. Some rules cannot be written in JSON Schema (a campaign
that exists, an event type's payload rules, a time at most an hour ahead, an id's length in UTF-8
bytes), so a schema-valid request can rightly get a 400 or a 404. The opposite direction,
``negative_data_rejection`` (what the schema forbids must be refused), is on: 207 is allowed there,
since a batch with some invalid events applies the others (documented), and 413 for a body too big.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app.config import PROJECT_ROOT, Settings
from app.demo import demo_rows
from app.openapi.document import OPENAPI_PATH
from app.security.keyring import new_keyring, save_keyring
from app.security.webhook_auth import sign_header
from tests.conftest import BASE_URL, SENDER, load_rows
from tests.openapi_tools import SECRET, ApiServer, api_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(180)]

EXAMPLES_PER_OPERATION = 200  # about 30 s here for the whole run (limit: 90 s)
SEEN: dict[str, set[int]] = {}  # operation -> statuses answered: the run must reach the handlers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("schemathesis")
    keys = root / "keys.json"
    save_keyring(new_keyring(datetime.now(UTC)), keys, overwrite=False)
    database_url = f"sqlite:///{root / 'profiles.db'}"
    load_rows(database_url, list(demo_rows(20)))
    served = Settings(
        public_base_url=BASE_URL,
        keys_file=keys,
        allowed_senders=(SENDER,),
        database_url=database_url,
        templates_dir=PROJECT_ROOT / "amp_templates",
        static_dir=PROJECT_ROOT / "static",
    )
    with api_server(served, root) as running:
        yield running


def schemathesis_config() -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20261201,
            "generation": {"deterministic": True, "database": "none"},
            "checks": {
                "negative_data_rejection": {
                    "expected-statuses": ["400", "401", "403", "404", "405", "413", "415", "422", "207"]
                }
            },
        }
    )


@pytest.fixture(scope="module")
def api_schema(server: ApiServer) -> Any:
    return schemathesis.openapi.from_url(f"{server.base_url}{OPENAPI_PATH}", config=schemathesis_config())


schema = schemathesis.pytest.from_fixture("api_schema")


def credentials(case: schemathesis.Case, server: ApiServer) -> dict[str, Any]:
    """Transport arguments: the API key, or for webhooks the body as bytes and its signature.

    Header names are spelt as the document's security schemes spell them: schemathesis's
    ``ignored_auth`` check strips them by that name to probe that the server refuses without them."""
    if not case.path.startswith("/webhooks/"):
        return {"headers": {"Authorization": f"Bearer {server.key}"}}
    raw = body_bytes(case.body)
    signature = sign_header([SECRET], int(time.time()), raw)
    return {"headers": {"Opentime-Signature": signature}, "data": raw}


def steer(case: schemathesis.Case) -> None:
    """Point half the generated requests at the demo campaign and recipients: a random campaign name
    is a 404 before any rendering, so without this the renderer would see only the examples. Only
    valid (positive) cases: an invalid one must keep what makes it invalid, or its refusal is moot."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("campaign"), str) and len(body["campaign"]) % 2:
        case.body = {**body, "campaign": "demo"}
    customer = (case.path_parameters or {}).get("customer")
    if isinstance(customer, str) and len(customer) % 2:
        case.path_parameters = {**(case.path_parameters or {}), "customer": "cust-0000003"}
    campaign = (case.path_parameters or {}).get("campaign")
    if isinstance(campaign, str) and len(campaign) % 2:
        case.path_parameters = {**(case.path_parameters or {}), "campaign": "demo"}


def body_bytes(body: Any) -> bytes:
    """What goes on the wire. The stdlib's json, not orjson: it writes any integer (2**64 included),
    so the server's own number checks are what refuses them."""
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    return json.dumps(body).encode()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_conforms(case: schemathesis.Case, server: ApiServer) -> None:
    steer(case)
    response = case.call_and_validate(
        base_url=server.base_url, excluded_checks=[positive_data_acceptance], **credentials(case, server)
    )
    SEEN.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)


def test_the_run_reached_the_handlers() -> None:
    """The generated requests were not all refused at the door (a run of 401s proves nothing)."""
    assert SEEN, "test_every_answer_conforms did not run first"
    assert 200 in SEEN["POST /webhooks/events"], SEEN
    assert 400 in SEEN["POST /webhooks/events"], SEEN
    assert SEEN["POST /api/render"] >= {200, 400, 404, 415}, SEEN
    assert SEEN["GET /api/customers/{customer}/personalization"] >= {200, 400, 404}, SEEN
    assert SEEN["GET /api/campaigns/{campaign}/report"] >= {200, 404}, SEEN
