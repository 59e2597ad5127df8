"""The OpenAPI 3 schema of the API validates, documents every endpoint, and is served with docs."""

import io
import subprocess
import sys

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

import embrec
from tests.worker import ROOT

ENDPOINTS = {
    "/api/embrec/items/{type}/{object_pk}/similar/": "get",
    "/api/embrec/items/{type}/popular/": "get",
    "/api/embrec/recommendations/": "get",
    "/api/embrec/search/": "get",
    "/api/embrec/interactions/": "post",
}


@pytest.fixture(scope="module")
def schema():
    return SchemaGenerator().get_schema(request=None, public=True)


def test_schema_validates_against_openapi_3(schema):
    validate_schema(schema)  # raises on any violation of the OpenAPI 3.0 JSON schema
    assert schema["openapi"].startswith("3.")


def test_schema_generation_has_no_warnings():
    out = io.StringIO()
    # --fail-on-warn turns any drf-spectacular warning (untyped field, unknown path parameter,
    # missing serializer) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert "/api/embrec/search/" in out.getvalue()


def test_every_endpoint_is_documented_with_errors(schema):
    for path, method in ENDPOINTS.items():
        operation = schema["paths"][path][method]
        responses = operation["responses"]
        ok = "201" if method == "post" else "200"
        assert ok in responses
        for status in ("400", "403", "404"):
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/Error")
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"detail", "code"}
    search_params = {p["name"] for p in schema["paths"]["/api/embrec/search/"]["get"]["parameters"]}
    assert {"q", "type", "limit", "mmr_lambda", "popularity", "recency"} <= search_params
    result = schema["components"]["schemas"]["Result"]["properties"]
    assert {"pk", "score", "source", "object", "explanation"} <= set(result)
    assert schema["paths"]["/api/embrec/items/{type}/{object_pk}/similar/"]["get"]["responses"][
        "409"
    ]


@pytest.mark.django_db
def test_schema_and_docs_are_served(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    served = yaml.safe_load(response.content)
    validate_schema(served)
    assert set(ENDPOINTS) <= set(served["paths"])
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content.lower()


def test_web_process_does_not_import_torch():
    code = (
        "import os, sys, django;"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'tests.settings');"
        "django.setup();"
        "import project.urls, embrec.api.views, embrec.queries, embrec.interactions;"
        "from django.urls import resolve; resolve('/api/embrec/search/');"
        "from embrec.encoders import get_encoder; get_encoder('default');"
        "assert 'torch' not in sys.modules, 'torch imported';"
        "print('no torch')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no torch" in done.stdout


@pytest.mark.django_db
def test_docs_page_works_offline(client):
    page = client.get("/api/docs/").content.decode()
    # Every asset comes from this site (drf-spectacular-sidecar), none from a CDN.
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"):
        path = f"drf_spectacular_sidecar/swagger-ui-dist/{asset}"
        assert f"/static/{path}" in page, asset
        assert finders.find(path), asset


def test_schema_follows_the_configuration(settings):
    settings.EMBREC = {**settings.EMBREC, "MAX_LIMIT": 40, "SEARCH_MAX_LENGTH": 64}
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, method in ENDPOINTS.items():
        params = {p["name"]: p for p in schema["paths"][path][method].get("parameters", [])}
        if "limit" in params:
            assert params["limit"]["schema"]["maximum"] == 40
        if "type" in params:
            assert params["type"]["schema"]["enum"] == sorted(
                r.label for r in embrec.registry.all()
            )
    search = {p["name"]: p for p in schema["paths"]["/api/embrec/search/"]["get"]["parameters"]}
    assert search["q"]["schema"]["maxLength"] == 64
    assert search["year__gte"]["schema"] == {"type": "integer", "minimum": 0, "maximum": 32767}
    assert search["category__isnull"]["schema"] == {"type": "boolean"}
