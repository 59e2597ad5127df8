"""embrec's errors share one base class, and the API answers every one from its attributes."""

import pytest
from django.core.exceptions import ImproperlyConfigured

import embrec
from embrec.api.views import exception_handler
from embrec.exceptions import (
    AlreadyRegistered,
    EmbrecError,
    InteractionError,
    NotEmbedded,
    NotRegistered,
    QueryError,
)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (QueryError("bad"), ValueError),
        (InteractionError("bad"), ValueError),
        (NotEmbedded("bad"), LookupError),
        (NotRegistered("bad"), LookupError),
        (AlreadyRegistered("bad"), ImproperlyConfigured),
    ],
)
def test_every_error_derives_from_the_base_and_its_builtin(error, builtin):
    assert isinstance(error, EmbrecError)
    assert isinstance(error, builtin)


def test_public_names():
    for name in ("EmbrecError", "QueryError", "NotEmbedded", "NotRegistered", "InteractionError"):
        assert getattr(embrec, name) is getattr(embrec.exceptions, name)


def test_code_and_field_per_instance_override_the_class_defaults():
    error = QueryError("limit must be an integer.", code="invalid_limit", field="limit")
    assert (error.code, error.field, error.status) == ("invalid_limit", "limit", 400)
    assert (QueryError("x").code, QueryError("x").field) == ("invalid", None)
    assert (NotRegistered("x").code, NotRegistered("x").field) == ("unknown_type", "type")


def test_api_maps_errors_by_the_base_class():
    response = exception_handler(NotEmbedded("not yet", state="pending"), {})
    assert response.status_code == 409
    assert response.data == {"detail": "not yet", "code": "not_embedded", "state": "pending"}

    response = exception_handler(NotRegistered("who?"), {})
    assert response.status_code == 404
    assert response.data == {"detail": "who?", "code": "unknown_type", "field": "type"}

    class Gone(EmbrecError):
        code = "gone"
        status = 410

        def details(self):
            return {"since": "yesterday"}

    response = exception_handler(Gone("removed", field="pk"), {})
    assert response.status_code == 410
    assert response.data == {
        "detail": "removed",
        "code": "gone",
        "field": "pk",
        "since": "yesterday",
    }
