"""Popularity counts: kept by triggers with every interaction write, equal to a fresh count."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.utils import timezone

from embrec import popularity
from embrec.interactions import Event, record_interaction, record_interactions
from embrec.models import Interaction, PopularityCount, PopularityUser
from embrec.read.scope import Exclusions
from tests.readpath import make_catalog, make_user
from tests.testapp.models import Article, Note

pytestmark = pytest.mark.django_db


def assert_counts_match(ct_id: int, *, now=None) -> None:
    assert popularity.stored_popularity(ct_id) == popularity.popularity_from_interactions(
        ct_id, now=now
    )


@pytest.fixture
def window(settings):
    """A 30-day window, counted for that window."""
    settings.EMBREC = {**settings.EMBREC, "POPULARITY_WINDOW_DAYS": 30}
    popularity.expire_popularity()  # another window was stored: recounts
    return 30


def test_counts_follow_every_kind_of_interaction_write(window):
    articles = make_catalog(per_category=2, embed=False)
    ct = ContentType.objects.get_for_model(Article)
    users = [make_user(f"u{i}") for i in range(5)]
    now = timezone.now()

    record_interaction(users[0], articles[0], "like")
    record_interaction(users[0], articles[0], "view")  # the same user again: still one
    record_interactions(
        users[1],
        [Event(articles[0], "view"), Event(articles[1], "dislike"), Event(articles[2], "like")],
    )
    assert popularity.stored_popularity(ct.id) == {str(articles[0].pk): 2, str(articles[2].pk): 1}
    assert_counts_match(ct.id)

    # A bulk import, with old events (outside the window) and negative ones.
    rng = random.Random(5)
    Interaction.objects.bulk_create(
        Interaction(
            user=users[rng.randrange(2, 5)],
            content_type=ct,
            object_pk=str(rng.choice(articles).pk),
            kind="imported",
            weight=rng.choice([-3.0, 1.0, 3.0]),
            created_at=now - timedelta(days=rng.uniform(0, 60)),
        )
        for _ in range(60)
    )
    assert_counts_match(ct.id)

    # Weight changes both ways, a move out of the window and back, a move to another object.
    Interaction.objects.filter(user=users[0]).update(weight=-3.0)
    assert str(articles[0].pk) in popularity.stored_popularity(ct.id)  # users[1] still likes it
    assert_counts_match(ct.id)
    Interaction.objects.filter(user=users[1], kind="dislike").update(weight=2.0)
    assert_counts_match(ct.id)
    Interaction.objects.filter(user=users[1]).update(created_at=now - timedelta(days=45))
    assert_counts_match(ct.id)
    Interaction.objects.filter(user=users[1], kind="like").update(created_at=now)
    assert_counts_match(ct.id)
    Interaction.objects.filter(user=users[2]).update(object_pk=str(articles[7].pk))
    assert_counts_match(ct.id)

    # Deletes: one row, a user (Django's cascade), raw SQL.
    Interaction.objects.filter(user=users[3]).order_by("id").first().delete()
    assert_counts_match(ct.id)
    users[4].delete()
    assert_counts_match(ct.id)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM embrec_interaction WHERE object_pk = %s", [str(articles[7].pk)])
    assert_counts_match(ct.id)
    assert not PopularityCount.objects.filter(users__lte=0).exists()
    assert PopularityUser.objects.count() == sum(popularity.stored_popularity(ct.id).values())


def test_random_mixed_writes_keep_counts_equal_to_a_fresh_count(window):
    articles = make_catalog(per_category=2, embed=False)
    ct = ContentType.objects.get_for_model(Article)
    users = [make_user(f"m{i}") for i in range(6)]
    rng = random.Random(11)
    now = timezone.now()
    for step in range(120):
        op = rng.random()
        user = rng.choice(users)
        if op < 0.45:
            record_interaction(
                user,
                rng.choice(articles),
                rng.choice(["view", "like", "dislike"]),
                at=now - timedelta(days=rng.uniform(0, 50)),
            )
        elif op < 0.65:
            rows = list(Interaction.objects.filter(user=user).values_list("id", flat=True))
            if rows:
                Interaction.objects.filter(id=rng.choice(rows)).update(
                    weight=rng.choice([-3.0, 0.0, 1.0, 5.0])
                )
        elif op < 0.8:
            rows = list(Interaction.objects.values_list("id", flat=True))
            if rows:
                Interaction.objects.filter(id__in=rng.sample(rows, min(3, len(rows)))).delete()
        else:
            Interaction.objects.filter(user=user).update(
                created_at=now - timedelta(days=rng.uniform(0, 50))
            )
        if step % 10 == 9:
            assert_counts_match(ct.id)
    assert_counts_match(ct.id)


def test_window_moves_forward_without_a_recount(window):
    articles = make_catalog(per_category=1, embed=False)
    ct = ContentType.objects.get_for_model(Article)
    a, b, c = make_user("a"), make_user("b"), make_user("c")
    now = timezone.now()
    record_interaction(a, articles[0], "like", at=now - timedelta(days=10))
    record_interaction(b, articles[0], "like", at=now - timedelta(days=20))
    record_interaction(b, articles[0], "dislike", at=now - timedelta(days=1))
    record_interaction(c, articles[0], "like", at=now - timedelta(days=40))  # already out
    record_interaction(a, articles[1], "view", at=now - timedelta(days=25))
    assert popularity.stored_popularity(ct.id) == {str(articles[0].pk): 2, str(articles[1].pk): 1}

    later = now + timedelta(days=15)  # b's like (35 days old) and a's view (40) fall out
    assert popularity.expire_popularity(now=later) == 2
    assert popularity.stored_popularity(ct.id) == {str(articles[0].pk): 1}
    assert_counts_match(ct.id, now=later)
    # A user back in the window counts again at once.
    record_interaction(b, articles[0], "view")
    assert popularity.stored_popularity(ct.id) == {str(articles[0].pk): 2}
    assert popularity.expire_popularity(now=later) == 0  # nothing more to drop


def test_reads_move_the_window_and_recount_when_the_setting_changes(settings, window):
    articles = make_catalog(per_category=1, embed=False)
    ct = ContentType.objects.get_for_model(Article)
    now = timezone.now()
    for n in range(3):
        record_interaction(make_user(f"w{n}"), articles[0], "like", at=now - timedelta(days=45))
    record_interaction(make_user("recent"), articles[1], "like")
    visible = Article.objects.all()
    assert popularity.max_popularity(ct.id, visible) == 1.0
    settings.EMBREC = {**settings.EMBREC, "POPULARITY_WINDOW_DAYS": None}
    assert popularity.max_popularity(ct.id, visible) == 3.0  # recounted for all time
    assert_counts_match(ct.id)
    settings.EMBREC = {**settings.EMBREC, "POPULARITY_WINDOW_DAYS": 30}
    assert popularity.popularity_scores(ct.id, [str(articles[0].pk)]) == {}
    assert_counts_match(ct.id)


def test_rebuild_command_checks_and_repairs_counts():
    articles = make_catalog(per_category=1, embed=False)
    ct = ContentType.objects.get_for_model(Article)
    for n in range(3):
        record_interaction(make_user(f"r{n}"), articles[n], "like")
    out = StringIO()
    call_command("embrec_rebuild_popularity", "--check", stdout=out)
    assert "matches" in out.getvalue()

    # Writes the triggers never saw (as after TRUNCATE or a restore without triggers).
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM embrec_popularity_count")
    with pytest.raises(CommandError, match="3 object"):
        call_command("embrec_rebuild_popularity", "--check", stdout=StringIO())
    out = StringIO()
    call_command("embrec_rebuild_popularity", stdout=out)
    assert "3 object(s)" in out.getvalue()
    assert_counts_match(ct.id)


def test_ranking_with_text_keys_and_keys_that_are_no_object():
    ct_note = ContentType.objects.get_for_model(Note, for_concrete_model=False)
    for slug in ("alpha", "beta", "gamma"):
        Note.objects.create(slug=slug, text=slug)
    ct = ContentType.objects.get_for_model(Article)
    articles = make_catalog(per_category=1, embed=False)
    users = [make_user(f"k{i}") for i in range(3)]
    rows = [
        Interaction(user=u, content_type=ct_note, object_pk=slug, kind="like", weight=3.0)
        for u, slugs in zip(
            users, [["alpha", "beta"], ["beta"], ["beta", "gamma", "zzz"]], strict=True
        )
        for slug in slugs
    ]
    # Keys no Article can have: never shown, never an error.
    rows += [
        Interaction(user=u, content_type=ct, object_pk=key, kind="like", weight=3.0)
        for u in users
        for key in ("not-a-number", "123456789012345678901234", str(articles[0].pk))
    ]
    Interaction.objects.bulk_create(rows)

    notes = popularity.popularity_ranking(
        ct_note.id, Note.objects.exclude(slug="gamma"), Exclusions(), 5
    )
    assert notes.top == [("beta", 3.0), ("alpha", 1.0)]
    assert notes.maximum == 3.0
    shown = popularity.popularity_ranking(ct.id, Article.objects.all(), Exclusions(), 5)
    assert shown.top == [(str(articles[0].pk), 3.0)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writes_of_one_pair_count_the_user_once():
    article = make_catalog(per_category=1, embed=False)[0]
    ct = ContentType.objects.get_for_model(Article)
    user = make_user("twice")
    first_written = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with transaction.atomic():
                record_interaction(user, article, "like")
                first_written.set()
                release.wait(10)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            first_written.set()
        finally:
            connections.close_all()

    def second() -> None:
        try:
            with transaction.atomic():
                record_interaction(user, article, "view")  # waits for the first's pair lock
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    one = threading.Thread(target=first)
    one.start()
    assert first_written.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.5)
    assert two.is_alive()  # blocked on the pair, not counting it a second time
    release.set()
    one.join(10)
    two.join(10)
    assert not errors
    assert popularity.stored_popularity(ct.id) == {str(article.pk): 1}
    assert_counts_match(ct.id)

    # Two concurrent deletes of the user's two events: the count goes to 0, not below.
    ids = list(Interaction.objects.filter(user=user).values_list("id", flat=True))
    barrier = threading.Barrier(2)

    def delete(pk: int) -> None:
        try:
            with transaction.atomic():
                barrier.wait(5)
                Interaction.objects.filter(id=pk).delete()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=delete, args=(pk,)) for pk in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert popularity.stored_popularity(ct.id) == {}
    assert not PopularityUser.objects.exists()


def test_sweep_moves_the_window(settings, window):
    article = make_catalog(per_category=1, embed=False)[0]
    ct = ContentType.objects.get_for_model(Article)
    record_interaction(make_user("old"), article, "like", at=timezone.now() - timedelta(days=20))
    assert popularity.stored_popularity(ct.id) == {str(article.pk): 1}
    settings.EMBREC = {**settings.EMBREC, "POPULARITY_WINDOW_DAYS": 10}
    call_command("embrec_sweep", stdout=StringIO())
    assert popularity.stored_popularity(ct.id) == {}
    assert_counts_match(ct.id)
