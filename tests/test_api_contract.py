"""The API keeps its OpenAPI contract under generated input (schemathesis): no server error, and
every response has a documented status, content type and body shape; anonymous and signed in."""

from __future__ import annotations

import base64
import time

import hypothesis
import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from embrec.registry import registry
from tests.readpath import make_catalog

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = 40  # per operation, generation mode and user: 800 requests in all


@pytest.fixture
def api(settings, monkeypatch):
    # The demo's registration searches with the real MiniLM model; this test covers the test
    # app's registrations, so the run stays fast.
    monkeypatch.setattr(
        registry, "_by_label", {k: v for k, v in registry._by_label.items() if k != "catalog.movie"}
    )
    # Hundreds of requests from one client: rates high enough to reach the views.
    settings.EMBREC = {
        **settings.EMBREC,
        "THROTTLE_RATES": {"anon": "100000/min", "user": "100000/min", "search": "100000/min"},
    }
    make_catalog(per_category=3)
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


def run_all(schema, headers: dict[str, str]) -> int:
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                nonlocal calls
                calls += 1
                response = case.call(headers=headers)
                case.validate_response(response, checks=CHECKS)

            check()
    return calls


def test_schema_lists_types_limits_and_filters(api):
    raw = api.raw_schema
    search = {p["name"]: p for p in raw["paths"]["/api/embrec/search/"]["get"]["parameters"]}
    assert search["type"]["schema"]["enum"] == ["testapp.article", "testapp.note"]
    assert search["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 10,
    }
    assert search["q"]["schema"]["maxLength"] == 512
    assert search["price__lte"]["schema"] == {"type": "number"}
    assert {"category", "category__in", "tenant__isnull"} <= set(search)
    event = raw["components"]["schemas"]["InteractionEvent"]["properties"]
    enums = {
        name: schema["enum"]
        for name, schema in raw["components"]["schemas"].items()
        if "enum" in schema
    }
    assert ["testapp.article", "testapp.note"] in enums.values()
    assert event["type"] and event["kind"]
    assert sorted(["view", "like", "purchase", "dislike"]) in enums.values()
    text = str(raw).lower()
    assert "catalog" not in text and "movie" not in text


def test_generated_requests_get_documented_answers(api):
    started = time.monotonic()
    anonymous = run_all(api, {})
    get_user_model().objects.create_user("contract", password="pw")
    token = base64.b64encode(b"contract:pw").decode()
    signed_in = run_all(api, {"Authorization": f"Basic {token}"})
    print(f"{anonymous + signed_in} requests in {time.monotonic() - started:.1f}s")
    assert anonymous and signed_in
