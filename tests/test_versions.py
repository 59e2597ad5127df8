"""Versioned embeddings: a new model is backfilled beside the live one, the alias switches in one
transaction, users' vectors follow, the old version is pruned after its grace period.

These tests drain in this process (eager Celery) to control every step; the test with a real
worker over Redis and queries running throughout the backfill is in test_versions_worker.py.
"""

from io import StringIO

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

import embrec
from embrec import indexing, switching
from embrec.conf import validate
from embrec.encoders import get_encoder
from embrec.encoders.hashing import HashingEncoder
from embrec.interactions import record_interaction
from embrec.models import Embedding, EncoderVersion, UserEmbedding
from embrec.read import retrieval
from embrec.registry import registry
from embrec.storage import IndexSpec, index_exists
from embrec.versions import VersionUnavailable, live_identity, pending_version
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

WORDS = (
    "river mountain robot galaxy garden violin pirate castle desert ocean forest engine "
    "dragon winter summer coffee market planet shadow silver thunder harbor meadow lantern"
).split()
QUERY = "robot galaxy engine"

OLD = {**TEST_EMBREC, "AUTO_KICK": False}


def salted(salt: str = "b", **extra) -> dict:
    """Settings whose "hashing" alias names another model of the same dimensions."""
    options = {"dimensions": 64, "salt": salt}
    return {
        **OLD,
        **extra,
        "ENCODERS": {
            **TEST_EMBREC["ENCODERS"],
            "hashing": {"CLASS": "tests.encoders.SaltedHashingEncoder", "OPTIONS": options},
        },
    }


def make_articles(n: int, seed: int = 0) -> list[Article]:
    rng = np.random.default_rng(seed)
    return Article.objects.bulk_create(
        Article(title=" ".join(rng.choice(WORDS, size=6, replace=False))) for _ in range(n)
    )


def scores(encoder, articles, query: np.ndarray) -> dict[str, float]:
    """Exact cosine similarity of each article to ``query`` under ``encoder``."""
    rec = registry.get(Article)
    vectors = encoder.encode([rec.get_text(a) for a in articles])
    values = vectors @ (query / np.linalg.norm(query))
    return {str(a.pk): float(v) for a, v in zip(articles, values, strict=True)}


def answers(articles, user) -> dict[str, tuple]:
    """Answers of each kind of query; ef_search covers every row, so the index is exact."""
    first = articles[0]
    return {
        "similar": tuple(r.pk for r in embrec.similar(first, limit=5, ef_search=1000)),
        "search": tuple(r.pk for r in embrec.search(QUERY, model=Article, limit=5, ef_search=1000)),
        "recommend": tuple(
            r.pk
            for r in embrec.recommend(
                user, model=Article, limit=5, ef_search=1000, explain=False, popularity=0
            )
        ),
    }


def assert_model_answers(got: dict[str, tuple], encoder, articles, liked) -> None:
    """Each answer is a top 5 of exact cosine under ``encoder`` (any order among equal scores)."""
    rec = registry.get(Article)
    queries_ = {
        "similar": (encoder.encode([rec.get_text(articles[0])])[0], str(articles[0].pk)),
        "search": (encoder.encode([QUERY])[0], None),
        # One like: the user's vector is the liked item's; seen items are excluded.
        "recommend": (encoder.encode([rec.get_text(liked)])[0], str(liked.pk)),
    }
    for kind, (vector, excluded) in queries_.items():
        table = scores(encoder, articles, vector)
        table.pop(excluded, None)
        best = sorted(table.values(), reverse=True)[:5]
        assert [round(table[pk], 4) for pk in got[kind]] == [round(v, 4) for v in best], kind


def live_setup(n: int = 60):
    with override_settings(EMBREC=OLD):
        articles = make_articles(n)
        indexing.reindex(registry.get(Article), kick=False)
        indexing.drain()
        user = get_user_model().objects.create_user("reader", password="pw")
        record_interaction(user, articles[7], "like")
    return articles, user


def test_the_first_write_registers_the_configured_identity_as_live():
    with override_settings(EMBREC=OLD):
        Article.objects.create(title="a first article")
        indexing.drain()
        version = EncoderVersion.objects.get(alias="hashing")
        assert version.state == EncoderVersion.LIVE
        assert version.identity == get_encoder("hashing").identity.as_string()
        assert version.config == {
            "CLASS": "embrec.encoders.hashing.HashingEncoder",
            "OPTIONS": {"dimensions": 64},
        }


def test_queries_keep_the_old_model_during_the_backfill_and_switch_to_the_new_one():
    articles, user = live_setup()
    old_encoder = get_encoder("hashing")
    old_identity = old_encoder.identity.as_string()
    old = answers(articles, user)
    assert_model_answers(old, old_encoder, articles, articles[7])

    with override_settings(EMBREC=salted()):
        new_encoder = get_encoder("hashing")
        with pytest.raises(AssertionError):
            assert_model_answers(old, new_encoder, articles, articles[7])  # models disagree
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        version = pending_version("hashing")
        assert version.identity == new_encoder.identity.as_string()
        assert version.backfill_queued_at is not None
        # Half of the backfill: every answer is still exactly the old model's, search text
        # included (encoded with the live model rebuilt from its stored configuration).
        indexing.drain(batch_size=10, max_batches=3)
        status = indexing.status(registry.get(Article), "hashing")
        assert 0 < status["next_embedded"] < len(articles)
        assert status["live"] == old_identity and 0 < status["progress"] < 100
        assert answers(articles, user) == old
        with pytest.raises(switching.SwitchError, match="not backfilled yet"):
            switching.switch("hashing")

        indexing.drain()
        assert answers(articles, user) == old  # complete, not switched yet
        switched = switching.after_drain()
        assert [v.identity for v in switched] == [version.identity]
        assert live_identity("hashing") == version.identity
        new = answers(articles, user)
        assert_model_answers(new, new_encoder, articles, articles[7])
        assert all(new[kind] != old[kind] for kind in old)
        # The user's vector was rebuilt for the new version before the flip.
        stored = UserEmbedding.objects.get(user=user, identity=version.identity)
        assert not stored.is_stale
        # The old version stays until its grace period is over.
        assert EncoderVersion.objects.get(identity=old_identity).state == EncoderVersion.RETIRED
        assert Embedding.objects.filter(identity=old_identity).count() == len(articles)


def test_edits_during_the_backfill_reach_both_versions():
    articles, user = live_setup(20)
    old_identity = live_identity("hashing")
    with override_settings(EMBREC=salted()):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        indexing.drain(batch_size=5, max_batches=1)
        edited = articles[15]
        edited.title = "entirely new words here"
        edited.save()
        indexing.drain()
        new_identity = pending_version("hashing").identity
        ct = ContentType.objects.get_for_model(Article)
        rows = dict(
            Embedding.objects.filter(content_type=ct, object_pk=str(edited.pk)).values_list(
                "identity", "vector"
            )
        )
        text = registry.get(Article).get_text(edited)
        np.testing.assert_allclose(
            rows[old_identity], HashingEncoder("x", dimensions=64).encode([text])[0], atol=1e-6
        )
        np.testing.assert_allclose(rows[new_identity], get_encoder("hashing").encode([text])[0])


def test_switch_refuses_an_incomplete_backfill_unless_forced_and_without_auto_switch():
    articles, user = live_setup(20)
    with override_settings(EMBREC=salted(VERSION_AUTO_SWITCH=False)):
        with pytest.raises(CommandError, match="no pending version"):
            call_command("embrec_switch", "hashing")
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        indexing.drain(batch_size=5, max_batches=1)
        with pytest.raises(CommandError, match="not backfilled yet: .*outbox row"):
            call_command("embrec_switch", "hashing")
        indexing.drain()
        assert switching.after_drain() == []  # VERSION_AUTO_SWITCH is off
        new_identity = pending_version("hashing").identity
        out = call_command("embrec_switch", verbosity=0)
        assert live_identity("hashing") == new_identity
        assert out is None

    # --force switches a partial backfill.
    with override_settings(EMBREC=salted("c", VERSION_AUTO_SWITCH=False)):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        indexing.drain(batch_size=5, max_batches=1)
        call_command("embrec_switch", "hashing", "--force")
        assert live_identity("hashing") == get_encoder("hashing").identity.as_string()


def test_a_newer_configuration_replaces_an_unfinished_pending_version():
    live_setup(10)
    with override_settings(EMBREC=salted("b")):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        first = pending_version("hashing")
    with override_settings(EMBREC=salted("c")):
        indexing.drain(max_batches=1)  # the drain registers the configured identity
        second = pending_version("hashing")
        assert second.identity != first.identity
        assert second.backfill_queued_at is None  # queued by the drain task's after_drain
        first.refresh_from_db()
        assert first.state == EncoderVersion.RETIRED
        switching.after_drain()
        indexing.drain()
        assert switching.after_drain()[0].identity == second.identity
    # A process whose settings name the live model changes nothing.
    with override_settings(EMBREC=salted("c")):
        indexing.drain()
        assert pending_version("hashing") is None


def test_prune_deletes_the_retired_version_after_its_grace_period():
    articles, user = live_setup(20)
    ct = ContentType.objects.get_for_model(Article)
    old_identity = live_identity("hashing")
    old_spec = IndexSpec(ct.id, "hashing", 64, identity=old_identity)
    assert index_exists(old_spec, exact=True)
    with override_settings(EMBREC=salted()):
        call_command("embrec_reindex", "testapp.article", "--sync", verbosity=0)
        new_identity = live_identity("hashing")
        assert new_identity != old_identity
        assert index_exists(IndexSpec(ct.id, "hashing", 64, identity=new_identity), exact=True)
        assert switching.prune() == []  # within VERSION_GRACE_PERIOD
        assert Embedding.objects.filter(identity=old_identity).exists()
        call_command("embrec_switch", "--prune", "--grace", "0", verbosity=0)
        assert not Embedding.objects.filter(identity=old_identity).exists()
        assert not UserEmbedding.objects.filter(identity=old_identity).exists()
        assert not index_exists(old_spec, exact=True)
        assert not EncoderVersion.objects.filter(identity=old_identity).exists()
        assert Embedding.objects.filter(identity=new_identity, content_type=ct).count() == 20
        with pytest.raises(CommandError, match="only applies with --prune"):
            call_command("embrec_switch", "--grace", "5")


def test_embrec_status_shows_live_and_pending_versions_with_progress():
    articles, user = live_setup(20)
    with override_settings(EMBREC=salted()):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        indexing.drain(batch_size=5, max_batches=2)
        out = StringIO()
        call_command("embrec_status", "testapp.article", stdout=out)
        header, _, row = out.getvalue().splitlines()[:3]
        assert header.split()[-3:] == ["live", "next", "progress"]
        cells = row.split()
        assert cells[-4:] == [
            live_identity("hashing"),
            pending_version("hashing").identity,
            "50",
            "%",
        ]


def test_search_answers_503_when_the_live_model_cannot_be_rebuilt():
    live_setup(10)
    with override_settings(EMBREC=salted()):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        # As if the live model's files had been replaced in place: its configuration no longer
        # gives its identity.
        EncoderVersion.objects.filter(state=EncoderVersion.LIVE).update(
            config={
                "CLASS": "embrec.encoders.hashing.HashingEncoder",
                "OPTIONS": {"dimensions": 32},
            }
        )
        with pytest.raises(VersionUnavailable):
            embrec.search(QUERY, model=Article)
        response = APIClient().get("/api/embrec/search/", {"q": QUERY, "type": "testapp.article"})
        assert response.status_code == 503, response.content
        # Queries that encode nothing still read the live version.
        assert len(embrec.similar(Article.objects.first(), limit=3)) == 3


def test_versioned_indexes_keep_each_query_on_its_own_version():
    """Live and pending versions of the same dimensions have separate partial indexes, and a
    query's plan uses the one of the version it reads."""
    live_setup(30)
    with override_settings(EMBREC=salted()):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        indexing.drain()
        ct = ContentType.objects.get_for_model(Article)
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")
        try:
            for version in EncoderVersion.objects.filter(alias="hashing"):
                spec = IndexSpec(ct.id, "hashing", 64, identity=version.identity)
                plan = retrieval.explain(spec, np.ones(64, dtype=np.float32), 5)
                assert f"Index Scan using {spec.name}" in plan, plan
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SET enable_seqscan = on")


def test_the_admin_dashboard_shows_live_and_next_versions_with_progress(admin_client):
    live_setup(20)
    old_identity = live_identity("hashing")
    with override_settings(EMBREC=salted()):
        call_command("embrec_reindex", "testapp.article", verbosity=0)
        indexing.drain(batch_size=5, max_batches=1)
        response = admin_client.get("/admin/embrec/embedding/dashboard/")
        assert response.status_code == 200
        row = next(
            r
            for r in response.context["rows"]
            if (r["model"], r["encoder"]) == ("testapp.article", "hashing")
        )
        new_identity = pending_version("hashing").identity
        assert (row["live"], row["next"], row["next_embedded"], row["progress"]) == (
            old_identity,
            new_identity,
            5,
            25.0,
        )
        html = response.content.decode()
        assert f'<td class="live">{old_identity}</td>' in html
        assert '<progress max="100" value="25.0">' in html
        assert new_identity in html


@pytest.mark.parametrize(
    ("key", "value"),
    [("VERSION_AUTO_SWITCH", "yes"), ("VERSION_GRACE_PERIOD", -1), ("VERSION_GRACE_PERIOD", None)],
)
def test_bad_version_settings_are_system_check_errors(key, value):
    problems = validate({key: value})
    assert [(p.id, p.key) for p in problems] == [("embrec.E011", key)]
