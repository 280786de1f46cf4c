"""Property-based requests generated from the app's own OpenAPI schema (schemathesis).

Schemathesis reads ``/openapi.json`` from the ASGI app and sends schema-valid and
schema-invalid requests to every documented operation. Each response must not be a 5xx,
must use a documented status code and content type, must match the documented body schema,
and schema-invalid requests must be rejected with a 4xx. Run against the default
(handover) bundle and the trained bundle, since each model requires different fields.

The app is this module's own; each bundle is swapped in by overriding the app's
``model_holder`` dependency.

``positive_data_acceptance`` is deliberately not checked: every feature is optional in the
schema and the loaded model decides which are required (documented in
``scoring/README.md``), so a schema-valid request may rightly get a 422.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from conftest import bundle_app
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from scoring import api
from scoring.bundle import LocalDirSource
from scoring.holder import ModelHolder
from scoring.settings import PROJECT_ROOT

# Bounded so the whole module runs well under a minute on 2 busy cores.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]

APP = bundle_app(PROJECT_ROOT / "artifacts")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)


@pytest.fixture(params=["artifacts", "artifacts/trained"], ids=["handover", "trained"])
def bundle(request: pytest.FixtureRequest) -> Iterator[str]:
    """Serve one bundle for the duration of a test, then the default again."""
    directory = PROJECT_ROOT / request.param
    holder = ModelHolder(lambda: LocalDirSource(directory))
    holder.get()  # loaded up front: a load failure is a setup error, not a 503 "finding"
    APP.dependency_overrides[api.model_holder] = lambda: holder
    try:
        yield request.param
    finally:
        APP.dependency_overrides.pop(api.model_holder)


@schema.parametrize()
@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_generated_requests_get_documented_non_5xx_answers(case, bundle: str) -> None:
    response = case.call()
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500, (bundle, response.status_code, response.text)
