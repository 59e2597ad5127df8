"""embrec.testing: the helpers host projects use in their own tests."""

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import override_settings

import embrec
from embrec import testing
from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.encoders.hashing import HashingEncoder
from embrec.models import Embedding, OutboxEntry
from embrec.testing import embed_now, hashing_settings
from project.catalog.models import Movie
from tests.testapp.models import Article

# What `pytest_plugins = ["embrec.testing"]` does in a project's root conftest.py.
embrec_sync = testing.embrec_sync


def test_hashing_settings_serve_every_alias_with_the_hashing_encoder():
    value = hashing_settings(
        {"ENCODERS": {"minilm": {"CLASS": "x.Y"}}, "DEFAULT_ENCODERS": ["minilm", "other"]},
        dimensions=32,
        MAX_LIMIT=7,
    )
    assert set(value["ENCODERS"]) == {"default", "minilm", "other"}
    assert {c["CLASS"] for c in value["ENCODERS"].values()} == {
        "embrec.encoders.hashing.HashingEncoder"
    }
    assert value["ENCODERS"]["minilm"]["OPTIONS"] == {"dimensions": 32}
    assert value["AUTO_KICK"] is False and value["MAX_LIMIT"] == 7
    assert value["DEFAULT_ENCODERS"] == ["minilm", "other"]


def test_embrec_sync_embeds_saved_objects_in_the_test_transaction(embrec_sync):
    # The demo's registration uses the MiniLM "default" alias: in tests it is the hashing encoder.
    assert isinstance(get_encoder("default"), HashingEncoder)
    assert embrec_settings.AUTO_KICK is False
    alien = Movie.objects.create(movielens_id=1, title="Alien space horror", genres="Horror")
    aliens = Movie.objects.create(movielens_id=2, title="Aliens space war", genres="Action")
    Movie.objects.create(movielens_id=3, title="Pride and Prejudice", genres="Romance")
    assert OutboxEntry.objects.count() == 3
    result = embrec_sync.embed_now()
    assert (result.encoded, result.failed) == (3, 0)
    assert OutboxEntry.objects.count() == 0
    vectors = Embedding.objects.filter(content_type=ContentType.objects.get_for_model(Movie))
    assert {v.identity for v in vectors} == {"hashing@1+bigrams/64/norm"}
    text = embrec.registry.get(Movie).get_text(alien)
    expected = HashingEncoder("x", dimensions=64).encode([text])[0]
    np.testing.assert_allclose(np.asarray(vectors.get(object_pk=str(alien.pk)).vector), expected)
    assert embrec.similar(alien, limit=1)[0].object == aliens
    assert embrec.search("space horror", model=Movie, limit=1)[0].object == alien


def test_embed_now_queues_objects_saved_without_signals(embrec_sync):
    Article.objects.bulk_create(Article(title=f"bulk {i}") for i in range(4))
    assert OutboxEntry.objects.count() == 0
    assert embed_now().encoded == 0
    assert embed_now(Article.objects.all()).encoded == 4
    assert embed_now(Article.objects.all()).unchanged == 4
    assert embed_now(Article.objects.all(), force=True).encoded == 4


@pytest.mark.django_db
def test_helpers_work_with_override_settings_without_the_fixture():
    with override_settings(EMBREC=hashing_settings()):
        movie = Movie.objects.create(movielens_id=9, title="Heat", genres="Crime")
        assert embed_now().encoded == 1
        assert embrec.similar(movie) == []
