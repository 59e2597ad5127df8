"""Interactions and user vectors on real PostgreSQL + pgvector."""

from datetime import timedelta

import numpy as np
import pytest
from django.contrib.auth.models import AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

import embrec
from embrec import indexing
from embrec.exceptions import InteractionError, NotRegistered
from embrec.interactions import (
    _decay,
    on_items_embedded,
    refresh_user_vector,
    user_profile,
)
from embrec.models import Interaction, UserEmbedding
from embrec.storage import parse_vector
from tests.readpath import make_catalog, make_user, text_vector
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db


def text_of(obj):
    return embrec.registry.get(obj).get_text(obj)


def by_category(articles, category):
    return [a for a in articles if a.category == category]


def test_record_interaction_uses_configured_weights():
    articles = make_catalog(per_category=2)
    user = make_user("w")
    like = embrec.record_interaction(user, articles[0], "like")
    dislike = embrec.record_interaction(user, articles[1], "dislike")
    custom = embrec.record_interaction(user, articles[2], "view", weight=0.25)
    assert (like.weight, dislike.weight, custom.weight) == (3.0, -3.0, 0.25)
    assert like.content_type == ContentType.objects.get_for_model(Article)
    assert like.object_pk == str(articles[0].pk)
    assert Interaction.objects.filter(user=user).count() == 3


def test_record_interaction_rejects_bad_input(settings):
    articles = make_catalog(per_category=1)
    user = make_user("bad")
    with pytest.raises(InteractionError) as exc:
        embrec.record_interaction(user, articles[0], "teleport")
    assert exc.value.code == "unknown_kind"
    with pytest.raises(InteractionError):
        embrec.record_interaction(AnonymousUser(), articles[0], "like")
    with pytest.raises(NotRegistered):
        embrec.record_interaction(user, user, "like")
    settings.EMBREC = {**settings.EMBREC, "INTERACTION_WEIGHTS": {"teleport": 2.0}}
    assert embrec.record_interaction(user, articles[0], "teleport").weight == 2.0
    assert Interaction.objects.count() == 1


def test_user_vector_is_weighted_decayed_mean_with_negatives(settings):
    settings.EMBREC = {**settings.EMBREC, "USER_VECTOR_HALF_LIFE_DAYS": 10.0}
    articles = make_catalog(per_category=3)
    user = make_user("math")
    now = timezone.now()
    a, b, c = articles[0], articles[3], articles[6]
    embrec.record_interaction(user, a, "like", at=now)  # 3
    embrec.record_interaction(user, a, "view", at=now - timedelta(days=10))  # 1 * 0.5
    embrec.record_interaction(user, b, "purchase", at=now - timedelta(days=20))  # 5 * 0.25
    embrec.record_interaction(user, c, "dislike", at=now)  # -3
    profile = user_profile(user.pk, embrec.registry.get(Article), "hashing", now=now)
    weights = {str(a.pk): 3.5, str(b.pk): 1.25, str(c.pk): -3.0}
    assert profile.weights == pytest.approx(weights)
    vectors = {pk: text_vector(text_of(o)) for pk, o in [(str(x.pk), x) for x in (a, b, c)]}
    expected = sum(w * vectors[pk] for pk, w in weights.items()) / sum(map(abs, weights.values()))
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(profile.vector, expected, atol=1e-6)
    assert profile.kinds[str(a.pk)] == "like"
    # The dislike pushes the vector away from c.
    assert float(profile.vector @ vectors[str(c.pk)]) < 0


def test_vector_refreshed_after_commit_not_during_request(django_capture_on_commit_callbacks):
    articles = make_catalog(per_category=3)
    user = make_user("async")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        embrec.record_interaction(user, articles[0], "like")
        assert not UserEmbedding.objects.filter(user=user).exists()
    assert len(callbacks) == 1
    assert not UserEmbedding.objects.filter(user=user).exists()
    with django_capture_on_commit_callbacks(execute=True):
        embrec.record_interaction(user, articles[1], "like")
    stored = UserEmbedding.objects.get(user=user)
    assert not stored.is_stale
    assert stored.interaction_count == 2
    assert stored.dimensions == 64
    profile = user_profile(user.pk, embrec.registry.get(Article), "hashing")
    np.testing.assert_allclose(parse_vector(stored.vector), profile.vector, atol=1e-6)
    # A new event marks it stale at once; reads then compute a fresh vector themselves.
    with django_capture_on_commit_callbacks(execute=False):
        embrec.record_interaction(user, articles[6], "purchase")
    assert UserEmbedding.objects.get(user=user).is_stale


def test_scifi_fan_gets_scifi_first_and_seen_disliked_are_excluded():
    articles = make_catalog()
    scifi, romance = by_category(articles, "scifi"), by_category(articles, "romance")
    user = make_user("fan")
    for item in scifi[:3]:
        embrec.record_interaction(user, item, "like")
    embrec.record_interaction(user, scifi[3], "view")
    embrec.record_interaction(user, romance[0], "view")
    embrec.record_interaction(user, romance[1], "dislike")
    results = embrec.recommend(user, model=Article, limit=10)
    assert len(results) == 10
    assert [r.object.category for r in results] == ["scifi"] * 10
    assert all(r.source == "personal" for r in results)
    interacted = {str(x.pk) for x in [*scifi[:4], *romance[:2]]}
    assert not interacted & {r.pk for r in results}
    top = results[0].explanation
    assert top and top[0].pk in {str(x.pk) for x in scifi[:3]}
    assert top[0].kind == "like" and top[0].contribution > 0
    # contribution = effective weight × cosine(interacted item, result), as numpy computes it.
    for result in results[:3]:
        for e in result.explanation:
            cosine = float(text_vector(text_of(e.object)) @ text_vector(text_of(result.object)))
            assert e.contribution == pytest.approx(e.weight * cosine, abs=1e-4)
    assert all(e.contribution >= f.contribution for e, f in zip(top, top[1:], strict=False))
    assert str(romance[1].pk) not in {e.pk for r in results for e in r.explanation}
    # Seen items may come back on request, disliked ones never do.
    again = embrec.recommend(user, model=Article, limit=79, exclude_seen=False)
    pks = {r.pk for r in again}
    assert str(scifi[0].pk) in pks and str(romance[0].pk) in pks
    assert str(romance[1].pk) not in pks
    assert len(again) == 79
    similar = embrec.similar(romance[0], user=user, limit=78)
    assert str(romance[1].pk) not in {r.pk for r in similar}
    assert len(similar) == 78
    # The dislike hides it from this user only.
    assert str(romance[1].pk) in {r.pk for r in embrec.similar(romance[0], limit=78)}


def test_new_anonymous_and_dislike_only_users_get_popular_fallback():
    articles = make_catalog(per_category=3)
    fans = [make_user(f"f{i}") for i in range(2)]
    for fan in fans:
        embrec.record_interaction(fan, articles[5], "purchase")
    newcomer = make_user("new")
    grumpy = make_user("grumpy")
    embrec.record_interaction(grumpy, articles[1], "dislike")
    for user in (newcomer, AnonymousUser(), None, grumpy):
        results = embrec.recommend(user, model=Article, limit=4)
        assert len(results) == 4
        assert results[0].pk == str(articles[5].pk)
        assert results[0].source == "popular"
        assert {r.source for r in results[1:]} <= {"popular", "recent"}
        assert results[0].explanation is None
    grumpy_results = embrec.recommend(grumpy, model=Article, limit=12)
    assert str(articles[1].pk) not in {r.pk for r in grumpy_results}


def test_reembedding_items_refreshes_dependent_user_vectors(django_capture_on_commit_callbacks):
    articles = make_catalog(per_category=3)
    user, bystander = make_user("dep"), make_user("by")
    liked = articles[0]
    with django_capture_on_commit_callbacks(execute=True):
        embrec.record_interaction(user, liked, "like")
        embrec.record_interaction(bystander, articles[9], "like")
    before = parse_vector(UserEmbedding.objects.get(user=user).vector)
    other = UserEmbedding.objects.get(user=bystander)

    liked.title, liked.body = "cooking pasta garlic", "recipe oven sauce"
    liked.save()  # outbox row
    with django_capture_on_commit_callbacks(execute=True):
        result = indexing.drain()
    assert result.encoded == 1
    after = UserEmbedding.objects.get(user=user)
    assert not after.is_stale
    np.testing.assert_allclose(
        parse_vector(after.vector),
        text_vector("cooking pasta garlic. recipe oven sauce"),
        atol=1e-6,
    )
    assert not np.allclose(parse_vector(after.vector), before)
    assert UserEmbedding.objects.get(user=bystander).updated_at == other.updated_at

    # The hook itself marks stale at once, before any task runs.
    ct = ContentType.objects.get_for_model(Article)
    assert on_items_embedded(ct.id, "hashing", [str(liked.pk)]) == 1
    assert UserEmbedding.objects.get(user=user).is_stale


def test_rebuild_command_recomputes_and_prunes(django_capture_on_commit_callbacks):
    articles = make_catalog(per_category=3)
    users = [make_user(f"r{i}") for i in range(3)]
    for i, user in enumerate(users):
        embrec.record_interaction(user, articles[i], "like")
    embrec.record_interaction(users[2], articles[3], "dislike")
    refresh_user_vector(users[0].pk)
    # A vector left from interactions that were deleted since.
    refresh_user_vector(users[1].pk)
    Interaction.objects.filter(user=users[1]).delete()
    call_command("embrec_rebuild_user_vectors", "testapp.article", verbosity=0)
    stored = {e.user_id: e for e in UserEmbedding.objects.all()}
    assert set(stored) == {users[0].pk, users[2].pk}
    for user in (users[0], users[2]):
        profile = user_profile(user.pk, embrec.registry.get(Article), "hashing")
        np.testing.assert_allclose(parse_vector(stored[user.pk].vector), profile.vector, atol=1e-6)
    with pytest.raises(Exception, match="not registered"):
        call_command("embrec_rebuild_user_vectors", "auth.user", verbosity=0)
    with pytest.raises(Exception, match="batch-size"):
        call_command("embrec_rebuild_user_vectors", batch_size=0, verbosity=0)


def test_refresh_task_runs_through_celery():
    from embrec.tasks import refresh_user_vectors

    articles = make_catalog(per_category=2)
    user = make_user("task")
    Interaction.objects.create(
        user=user,
        content_type=ContentType.objects.get_for_model(Article),
        object_pk=str(articles[0].pk),
        kind="like",
        weight=3.0,
    )
    ct = ContentType.objects.get_for_model(Article)
    assert refresh_user_vectors.delay(user.pk, ct.id).get() == 1
    assert UserEmbedding.objects.filter(user=user, encoder="hashing").exists()


def test_recommend_uses_fresh_stored_vector_and_recomputes_stale_one():
    articles = make_catalog()
    scifi, cooking = by_category(articles, "scifi"), by_category(articles, "cooking")
    user = make_user("stored")
    embrec.record_interaction(user, scifi[0], "like")
    refresh_user_vector(user.pk)
    # Point the stored vector at cooking: a fresh stored vector is what ranking uses.
    UserEmbedding.objects.filter(user=user).update(vector=text_vector(text_of(cooking[0])))
    stored = embrec.recommend(user, model=Article, limit=3, explain=False)
    assert stored[0].pk == str(cooking[0].pk)
    UserEmbedding.objects.filter(user=user).update(is_stale=True)
    fresh = embrec.recommend(user, model=Article, limit=3, explain=False)
    assert fresh[0].object.category == "scifi"
    assert str(cooking[0].pk) not in {r.pk for r in fresh}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_real_worker_refreshes_user_vector_after_the_request(tmp_path):
    """The API answers before any vector exists; a real Celery worker over Redis builds it."""
    from rest_framework.test import APIClient

    from tests.worker import (
        flush_broker,
        redis_available,
        start_worker,
        stop_worker,
        use_broker,
        wait_for,
    )

    assert redis_available(), "Redis must run on 127.0.0.1:6379 (.ci/run starts it)"
    articles = make_catalog(per_category=3)
    user = make_user("remote")
    client = APIClient()
    client.force_authenticate(user)
    flush_broker()
    worker = start_worker(logfile=tmp_path / "worker.log", name="readpath")
    try:
        with use_broker():
            response = client.post(
                "/api/embrec/interactions/",
                [
                    {"type": "testapp.article", "pk": str(a.pk), "kind": "like"}
                    for a in articles[:2]
                ],
                format="json",
            )
            assert response.status_code == 201
            stored = wait_for(
                lambda: UserEmbedding.objects.filter(user=user, is_stale=False).first(),
                timeout=90,
                message="the worker to store the user vector",
            )
        profile = user_profile(user.pk, embrec.registry.get(Article), "hashing")
        np.testing.assert_allclose(parse_vector(stored.vector), profile.vector, atol=1e-6)
        # Computed by the worker process, not in the request.
        log = (tmp_path / "worker.log").read_text()
        assert "embrec.refresh_user_vectors" in log and "succeeded" in log, log[-2000:]
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])


def test_old_interactions_still_give_a_personal_vector(settings):
    # Regression: decay measured from now underflowed every 1998 weight to 0.0 (here 0.5 ** ~2000),
    # and the user silently got popularity results.
    settings.EMBREC = {**settings.EMBREC, "USER_VECTOR_HALF_LIFE_DAYS": 5.0}
    articles = make_catalog()
    scifi = by_category(articles, "scifi")
    user = make_user("y1998")
    latest = timezone.make_aware(timezone.datetime(1998, 4, 22, 12, 0))
    embrec.record_interaction(user, scifi[0], "like", at=latest)
    embrec.record_interaction(user, scifi[1], "view", at=latest - timedelta(days=30))
    embrec.record_interaction(user, scifi[2], "view", at=latest - timedelta(days=60))
    assert _decay(latest, timezone.now()) == 0.0  # what measuring from now gave
    profile = user_profile(user.pk, embrec.registry.get(Article), "hashing")
    # Ages are counted back from the user's latest interaction.
    assert profile.weights == pytest.approx(
        {str(scifi[0].pk): 3.0, str(scifi[1].pk): 0.5**6, str(scifi[2].pk): 0.5**12}
    )
    assert profile.vector is not None
    assert refresh_user_vector(user.pk, Article) == 1
    results = embrec.recommend(user, model=Article, limit=5)
    assert [r.source for r in results] == ["personal"] * 5
    categories = [r.object.category for r in results]
    assert categories[0] == "scifi" and categories.count("scifi") >= 4
    assert UserEmbedding.objects.filter(user=user).exists()


def test_max_interactions_counts_distinct_items_and_uniform_weighting(settings):
    settings.EMBREC = {
        **settings.EMBREC,
        "USER_VECTOR_MAX_INTERACTIONS": 2,
        "USER_VECTOR_HALF_LIFE_DAYS": None,
    }
    articles = make_catalog(per_category=3)
    a, b, c, d = articles[0], articles[3], articles[6], articles[9]
    user = make_user("distinct")
    t = timezone.make_aware(timezone.datetime(1998, 1, 1))
    embrec.record_interaction(user, a, "view", at=t)
    embrec.record_interaction(user, b, "purchase", at=t + timedelta(hours=1))
    embrec.record_interaction(user, c, "view", at=t + timedelta(hours=2))
    # Three events on c and d; the window is two *items*, with every event on them.
    embrec.record_interaction(user, c, "like", at=t + timedelta(hours=3))
    embrec.record_interaction(user, d, "dislike", at=t + timedelta(hours=4))
    embrec.record_interaction(user, c, "view", at=t + timedelta(hours=5))
    rec = embrec.registry.get(Article)
    weighted = user_profile(user.pk, rec, "hashing")
    assert weighted.weights == pytest.approx({str(c.pk): 5.0, str(d.pk): -3.0})
    assert weighted.interaction_count == 4

    settings.EMBREC = {**settings.EMBREC, "USER_VECTOR_WEIGHTING": "uniform"}
    uniform = user_profile(user.pk, rec, "hashing")
    # Positive events weigh 1 whatever their kind; the dislike leaves the vector alone ...
    assert uniform.weights == pytest.approx({str(c.pk): 3.0, str(d.pk): 0.0})
    np.testing.assert_allclose(uniform.vector, text_vector(text_of(c)), atol=1e-6)
    # ... but still hides its item.
    results = embrec.recommend(user, model=Article, limit=11, exclude_seen=False)
    assert str(d.pk) not in {r.pk for r in results}
    assert str(c.pk) in {r.pk for r in results}

    settings.EMBREC = {**settings.EMBREC, "USER_VECTOR_WEIGHTING": "binary"}
    with pytest.raises(ImproperlyConfigured, match="USER_VECTOR_WEIGHTING"):
        user_profile(user.pk, rec, "hashing")


def test_simultaneous_events_break_ties_by_key(settings):
    settings.EMBREC = {**settings.EMBREC, "USER_VECTOR_MAX_INTERACTIONS": 2}
    articles = make_catalog(per_category=3)
    user = make_user("ties")
    t = timezone.make_aware(timezone.datetime(1998, 1, 1))
    for item in articles[:5]:
        embrec.record_interaction(user, item, "view", at=t)
    keys = sorted((str(x.pk) for x in articles[:5]), reverse=True)[:2]
    assert set(user_profile(user.pk, embrec.registry.get(Article), "hashing").weights) == set(keys)


@pytest.mark.django_db(transaction=True)
def test_drain_does_not_wait_for_a_running_user_vector_refresh():
    """A refresh holding user-vector rows must not hold up the item vectors of a drain."""
    import time

    import psycopg
    from django.db import connection

    from embrec.models import Embedding

    articles = make_catalog(per_category=3)
    user = make_user("locked")
    embrec.record_interaction(user, articles[0], "like")  # commits; its refresh runs eagerly
    assert UserEmbedding.objects.filter(user=user).exists()
    before = Embedding.objects.get(object_pk=str(articles[0].pk)).content_hash

    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
    ) as refresh:  # a user-vector refresh in progress: its rows are locked until it commits
        refresh.execute(
            "SELECT id FROM embrec_userembedding WHERE user_id = %s FOR UPDATE", (user.pk,)
        )
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '20s'")  # (a bound, should the drain wait)
        try:
            # The save's drain runs eagerly, after commit, while the refresh holds its rows.
            articles[0].title = "a new title while a refresh runs"
            started = time.monotonic()
            articles[0].save()
            elapsed = time.monotonic() - started
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
        assert Embedding.objects.get(object_pk=str(articles[0].pk)).content_hash != before
        assert elapsed < 10, f"the drain waited {elapsed:.1f}s for the refresh's row locks"
        refresh.rollback()
