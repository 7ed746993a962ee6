"""The OpenAPI document against the live server, checked by schemathesis (no 5xx, no response
outside the document, invalid input refused), plus the document's own shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import DOCUMENT
from tests.api_support import (  # noqa: F401 - fixtures are used by name
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)

SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def _takes_input(operation: Any) -> bool:
    spec = DOCUMENT["paths"][operation.path][operation.method.lower()]
    return bool(spec.get("parameters") or spec.get("requestBody"))


# Invalid input only exists where there is input; GET /healthz has none to break.
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if _takes_input(op)
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Bounded: the whole run stays well under a minute on two shared cores.
EXAMPLES = 25


def test_served_document_is_the_module_document(client: httpx.Client) -> None:
    """GET /openapi.json serves the 3.1 document, and it names every route the app has but the
    ops console's HTML pages (/ops, DESIGN section 14), which are not the JSON API."""
    r = client.get("/openapi.json")
    assert r.status_code == 200 and r.json() == DOCUMENT
    assert DOCUMENT["openapi"].startswith("3.1")
    routes = {getattr(route, "path", None) for route in client_app_routes()}
    api = {path for path in routes if path != "/ops" and not str(path).startswith("/ops/")}
    assert api == set(DOCUMENT["paths"])
    assert "/ops" in routes  # the console is there, and only it is left out


def client_app_routes() -> list[Any]:
    from api.app import create_app
    from shared.config import Settings

    return list(create_app(Settings()).routes)


@pytest.mark.parametrize(
    ("operation", "mode"), CASES, ids=[f"{op.label} {mode.value}" for op, mode in CASES]
)
def test_server_matches_document(
    live: LiveServer, api_key: str, operation: Any, mode: GenerationMode
) -> None:
    """Generated requests get only documented statuses, bodies and headers, never a 5xx."""
    headers = {"Authorization": f"Bearer {api_key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        ours = {} if _breaks_authorization(case) else headers
        case.call_and_validate(base_url=live.url, headers=ours, checks=CHECKS, timeout=10)

    run()


def _breaks_authorization(case: Any) -> bool:
    """A negative case that leaves out or garbles the Authorization header on purpose (the bearer
    scheme, which schemathesis negates as a required header): it must go out as generated, so the
    answer is the 401 it expects. Adding our valid key to it made the server accept a request the
    case meant as invalid, and negative_data_rejection fail whenever such a case was drawn."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    mutations = getattr(data, "mutations", None) or ()
    named = {getattr(data, "parameter", None)} | {getattr(m, "parameter", None) for m in mutations}
    return "Authorization" in named
