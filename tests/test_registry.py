"""Registration (``@embrec.register``), discovery and the system checks that guard configuration."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

import embrec
from embrec.checks import check_settings
from embrec.registry import registry
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article, Note


@pytest.fixture
def temporary():
    """Register ``auth.Group`` for one test, and always unregister it afterwards."""
    registered = []

    def register(cls):
        embrec.register(Group)(cls)
        registered.append(Group)
        return registry.get(Group)

    yield register
    for model in registered:
        if registry.is_registered(model):
            embrec.unregister(model)


def ids(errors: list[Error]) -> list[str]:
    return sorted({error.id for error in errors})


def test_recommendables_modules_are_discovered_at_startup():
    labels = {rec.label for rec in registry.all()}
    assert {"testapp.article", "testapp.note", "catalog.movie"} <= labels
    rec = registry.get(Article)
    assert type(rec).__name__ == "ArticleRecommendable"
    assert registry.get("testapp.Article") is rec
    assert registry.get(Article(title="x")) is rec


def test_register_returns_class_and_text_comes_from_fields(temporary):
    @embrec.register(Group)
    class GroupRecommendable(embrec.Recommendable):
        fields = ["name", "pk"]
        encoders = ["hashing"]

    try:
        rec = registry.get(Group)
        assert isinstance(rec, GroupRecommendable)
        assert rec.get_text(Group(pk=7, name="Editors")) == "Editors. 7"
        assert rec.get_encoders() == ["hashing"]
    finally:
        embrec.unregister(Group)
    assert not registry.is_registered(Group)


def test_get_text_hook_and_default_encoders(temporary):
    class GroupRecommendable(embrec.Recommendable):
        def get_text(self, obj):
            return f"group {obj.name.upper()}"

    rec = temporary(GroupRecommendable)
    assert rec.get_text(Group(name="staff")) == "group STAFF"
    # No `encoders`: EMBREC["DEFAULT_ENCODERS"].
    assert rec.get_encoders() == ["default"]


def test_double_registration_is_an_error():
    with pytest.raises(embrec.AlreadyRegistered, match="testapp.article is already registered"):

        @embrec.register(Article)
        class Again(embrec.Recommendable):
            fields = ["title"]

    # The original registration is untouched.
    assert type(registry.get(Article)).__name__ == "ArticleRecommendable"


def test_unknown_field_is_an_error_naming_it():
    with pytest.raises(ImproperlyConfigured, match="'subtitle'.*neither a field nor an attribute"):

        @embrec.register(Group)
        class Bad(embrec.Recommendable):
            fields = ["name", "subtitle"]

    assert not registry.is_registered(Group)


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"fields": "name"}, "must be a list of names"),
        ({}, "must set `fields` or override get_text"),
        ({"fields": ["name"], "filter_fields": ["colour"]}, "filter_fields names 'colour'"),
    ],
)
def test_bad_registrations_are_rejected(attrs, message):
    cls = type("Bad", (embrec.Recommendable,), attrs)
    with pytest.raises(ImproperlyConfigured, match=message):
        embrec.register(Group)(cls)
    assert not registry.is_registered(Group)


def test_registering_something_that_is_not_a_model_or_recommendable():
    with pytest.raises(ImproperlyConfigured, match="expects a model class"):
        embrec.register("testapp.Article")(embrec.Recommendable)
    with pytest.raises(ImproperlyConfigured, match="must subclass embrec.Recommendable"):
        embrec.register(Group)(object)


def test_unregistered_models_raise_clear_errors():
    with pytest.raises(
        embrec.NotRegistered, match=r"auth.permission is not registered.*registered:"
    ):
        registry.get(Permission)
    with pytest.raises(embrec.NotRegistered):
        embrec.unregister(Permission)
    with pytest.raises(embrec.NotRegistered):
        embrec.mark_dirty([Permission(codename="x")])


def test_several_encoders_per_model(temporary):
    class GroupRecommendable(embrec.Recommendable):
        fields = ["name"]
        encoders = ["hashing", "glove"]

    rec = temporary(GroupRecommendable)
    assert rec.get_encoders() == ["hashing", "glove"]


def test_note_with_string_primary_key_round_trips():
    rec = registry.get(Note)
    assert rec.pk_from_string("my-slug") == "my-slug"
    assert registry.get(Article).pk_from_string("12") == 12


# -- system checks ---------------------------------------------------------------------------


def with_encoders(**encoders):
    return {"ENCODERS": {**TEST_EMBREC["ENCODERS"], **encoders}}


def test_checks_pass_on_the_test_configuration():
    assert check_settings() == []


@pytest.mark.parametrize(
    ("embrec_settings", "expected"),
    [
        ({"ENCODER": {}}, "embrec.E001"),
        ({"ENCODERS": {}}, "embrec.E002"),
        (with_encoders(bad={"CLASS": "no.such.Encoder"}), "embrec.E003"),
        (with_encoders(bad={"CLASS": "collections.OrderedDict"}), "embrec.E003"),
        (with_encoders(bad={"OPTIONS": {}}), "embrec.E003"),
        ({**with_encoders(), "DEFAULT_ENCODERS": ["missing"]}, "embrec.E006"),
        ({**with_encoders(), "BATCH_SIZE": 0}, "embrec.E007"),
        ({**with_encoders(), "QUEUE": ""}, "embrec.E007"),
        (
            with_encoders(bad={"CLASS": "embrec.encoders.hashing.HashingEncoder", "OPTIONS": [64]}),
            "embrec.E009",
        ),
    ],
)
def test_checks_catch_bad_settings(embrec_settings, expected):
    with override_settings(EMBREC=embrec_settings):
        errors = check_settings()
    assert expected in ids(errors), errors
    assert all(error.hint for error in errors), "every error carries a hint"


def test_check_catches_registration_with_unknown_encoder(temporary):
    class GroupRecommendable(embrec.Recommendable):
        fields = ["name"]
        encoders = ["hashing", "nope"]

    temporary(GroupRecommendable)
    errors = check_settings()
    assert ids(errors) == ["embrec.E004"]
    assert "'nope'" in errors[0].msg and "auth.group" in errors[0].msg


def test_check_catches_get_queryset_of_another_model(temporary):
    class GroupRecommendable(embrec.Recommendable):
        fields = ["name"]
        encoders = ["hashing"]

        def get_queryset(self):
            return Permission.objects.all()

    temporary(GroupRecommendable)
    errors = check_settings()
    assert ids(errors) == ["embrec.E008"]


def test_manage_py_check_fails_loudly_on_bad_configuration():
    with (
        override_settings(EMBREC=with_encoders(bad={"CLASS": "no.such.Encoder"})),
        pytest.raises(SystemCheckError, match=r"embrec.E003.*no.such.Encoder"),
    ):
        call_command("check")
