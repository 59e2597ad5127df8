"""Admin: the "Recompute embeddings" mixin action and the Embedding / outbox admins."""

import numpy as np
import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import override_settings

from embrec import indexing, registry
from embrec.models import Embedding, OutboxEntry
from project.catalog.models import Movie
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

# Movies use the real MiniLM encoder: actions only queue work here, nothing is drained.
NO_KICK = {**TEST_EMBREC, "AUTO_KICK": False}


@pytest.fixture
def movies():
    with override_settings(EMBREC=NO_KICK):
        objs = [
            Movie.objects.create(movielens_id=i, title=f"Movie {i}", year=1990 + i)
            for i in range(1, 4)
        ]
    OutboxEntry.objects.all().delete()
    return objs


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


def staff_client(client, *codenames):
    user = User.objects.create_user("staff", "staff@example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_demo_movie_admin_offers_recompute_embeddings(admin_client, movies):
    response = admin_client.get("/admin/catalog/movie/")
    assert response.status_code == 200
    assert b'value="recompute_embeddings"' in response.content
    assert b"Recompute embeddings" in response.content


def test_recompute_action_queues_selected_objects_and_reports_count(admin_client, movies):
    with override_settings(EMBREC=NO_KICK):
        response = admin_client.post(
            "/admin/catalog/movie/",
            {"action": "recompute_embeddings", "_selected_action": [movies[0].pk, movies[2].pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert "2 objects queued for recomputing their embeddings." in messages_of(response)
    rows = OutboxEntry.objects.order_by("object_pk")
    assert [r.object_pk for r in rows] == sorted([str(movies[0].pk), str(movies[2].pk)])
    assert all(r.force and r.state == "pending" for r in rows)


def test_recompute_action_requires_change_permission(client, movies):
    viewer = staff_client(client, "view_movie")
    response = viewer.get("/admin/catalog/movie/")
    assert response.status_code == 200
    assert b"recompute_embeddings" not in response.content
    with override_settings(EMBREC=NO_KICK):
        viewer.post(
            "/admin/catalog/movie/",
            {"action": "recompute_embeddings", "_selected_action": [movies[0].pk]},
        )
    assert OutboxEntry.objects.count() == 0


def test_recompute_action_allowed_with_change_permission(client, movies):
    editor = staff_client(client, "view_movie", "change_movie")
    with override_settings(EMBREC=NO_KICK):
        response = editor.post(
            "/admin/catalog/movie/",
            {"action": "recompute_embeddings", "_selected_action": [movies[1].pk]},
            follow=True,
        )
    assert "1 object queued for recomputing its embeddings." in messages_of(response)
    assert OutboxEntry.objects.get().object_pk == str(movies[1].pk)


@pytest.fixture
def embedded_articles():
    objs = [Article.objects.create(title=f"article {i}", category="c") for i in range(4)]
    indexing.drain()
    return objs


def test_embedding_admin_lists_and_filters_by_model_encoder_and_state(
    admin_client, embedded_articles
):
    ct = ContentType.objects.get_for_model(Article)
    a0, a1, a2, _ = embedded_articles
    with override_settings(EMBREC=NO_KICK):
        a0.title = "changed"
        a0.save()  # pending
    OutboxEntry.objects.create(
        content_type=ct, object_pk=str(a1.pk), state=OutboxEntry.FAILED, last_error="boom"
    )
    Embedding.objects.filter(object_pk=str(a2.pk)).update(identity="old@1/64/norm")  # stale

    def listed(query: str) -> set[str]:
        response = admin_client.get(f"/admin/embrec/embedding/?{query}")
        assert response.status_code == 200
        return {str(e.object_pk) for e in response.context["cl"].result_list}

    everything = {str(a.pk) for a in embedded_articles}
    assert listed("") == everything
    assert listed(f"content_type__id__exact={ct.id}") == everything
    assert listed("encoder=hashing") == everything
    assert listed("encoder=glove") == set()
    assert listed("state=pending") == {str(a0.pk)}
    assert listed("state=failed") == {str(a1.pk)}
    assert listed("state=stale") == {str(a2.pk)}
    assert listed("state=fresh") == everything - {str(a0.pk), str(a1.pk)}


def test_embedding_admin_links_to_the_host_objects_admin(admin_client, movies):
    from django.db import transaction

    from embrec.storage import VectorRow, write_vectors

    ct = ContentType.objects.get_for_model(Movie)
    with transaction.atomic():
        write_vectors(
            ct.id,
            "default",
            "m@1/2/norm",
            [VectorRow(str(movies[0].pk), np.array([1.0, 0.0], dtype=np.float32), "h")],
        )
    response = admin_client.get("/admin/embrec/embedding/")
    assert f'href="/admin/catalog/movie/{movies[0].pk}/change/"'.encode() in response.content


def test_embedding_admin_is_read_only_and_shows_the_vector(admin_client, embedded_articles):
    emb = Embedding.objects.first()
    response = admin_client.get(f"/admin/embrec/embedding/{emb.pk}/change/")
    assert response.status_code == 200
    assert emb.identity.encode() in response.content
    assert f"{emb.vector[0]:.4f}".encode() in response.content
    assert b'name="_save"' not in response.content
    assert admin_client.get("/admin/embrec/embedding/add/").status_code == 403


def test_reembed_selected_action(admin_client, embedded_articles):
    chosen = Embedding.objects.filter(object_pk__in=[str(a.pk) for a in embedded_articles[:2]])
    with override_settings(EMBREC=NO_KICK):
        response = admin_client.post(
            "/admin/embrec/embedding/",
            {
                "action": "reembed_selected",
                "_selected_action": list(chosen.values_list("pk", flat=True)),
            },
            follow=True,
        )
    assert "2 embeddings queued for re-embedding." in messages_of(response)
    rows = OutboxEntry.objects.all()
    assert {r.encoder for r in rows} == {"hashing"} and all(r.force for r in rows)
    # Forced: re-encoded although the text did not change.
    assert indexing.drain().encoded == 2


def test_reembed_requires_change_permission_on_embeddings(client, embedded_articles):
    viewer = staff_client(client, "view_embedding")
    response = viewer.get("/admin/embrec/embedding/")
    assert response.status_code == 200
    assert b"reembed_selected" not in response.content


def test_outbox_admin_shows_errors_and_retries(admin_client, embedded_articles):
    ct = ContentType.objects.get_for_model(Article)
    entry = OutboxEntry.objects.create(
        content_type=ct,
        object_pk=str(embedded_articles[0].pk),
        state=OutboxEntry.FAILED,
        last_error="ValueError: cannot encode",
    )
    response = admin_client.get("/admin/embrec/outboxentry/?state__exact=failed")
    assert response.status_code == 200
    assert [e.pk for e in response.context["cl"].result_list] == [entry.pk]
    assert (
        b"cannot encode"
        in admin_client.get(f"/admin/embrec/outboxentry/{entry.pk}/change/").content
    )
    with override_settings(EMBREC=NO_KICK):
        admin_client.post(
            "/admin/embrec/outboxentry/",
            {"action": "retry_selected", "_selected_action": [entry.pk]},
        )
    entry.refresh_from_db()
    assert (entry.state, entry.last_error) == ("pending", "")


def _list_queries(admin_client, query: str = "") -> tuple[int, bytes]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(f"/admin/embrec/embedding/{query}")
    assert response.status_code == 200
    return len(ctx.captured_queries), response.content


def test_embedding_admin_shows_object_names_loaded_in_bulk(admin_client):
    Article.objects.create(title="first story", category="c")
    Article.objects.create(title="second story", category="c")
    indexing.drain()
    few, content = _list_queries(admin_client)
    assert b"first story" in content and b"second story" in content
    for i in range(6):
        Article.objects.create(title=f"more story {i}", category="c")
    indexing.drain()
    many, content = _list_queries(admin_client)
    assert b"more story 5" in content
    assert many == few  # no query per row


def test_embedding_admin_searches_by_the_objects_text(admin_client, embedded_articles, movies):
    from django.db import transaction

    from embrec.storage import VectorRow, write_vectors

    ct = ContentType.objects.get_for_model(Movie)
    with transaction.atomic():
        write_vectors(
            ct.id,
            "default",
            "m@1/2/norm",
            [
                VectorRow(str(m.pk), np.array([1.0, float(n)], dtype=np.float32), "h")
                for n, m in enumerate(movies)
            ],
        )

    def found(term: str) -> set[str]:
        response = admin_client.get("/admin/embrec/embedding/", {"q": term})
        assert response.status_code == 200
        return {str(e.host_object) for e in response.context["cl"].result_list}

    # Articles have no ModelAdmin: their registration's text fields are searched.
    assert found("article 2") == {"article 2"}
    # Movies: the movie admin's search_fields.
    assert found("movie 3") == {str(movies[2])}
    assert found("nothing like this") == set()
    assert found(str(embedded_articles[0].pk)) >= {"article 0"}


def _dashboard_row(response, model: str, encoder: str) -> dict:
    return next(
        r for r in response.context["rows"] if (r["model"], r["encoder"]) == (model, encoder)
    )


def test_dashboard_shows_status_counts_and_last_error(admin_client, embedded_articles):
    ct = ContentType.objects.get_for_model(Article)
    a0, a1, a2, _ = embedded_articles
    for linking_page in ("/admin/embrec/", "/admin/embrec/embedding/"):
        linked = admin_client.get(linking_page).content
        assert b'href="/admin/embrec/embedding/dashboard/"' in linked
    response = admin_client.get("/admin/embrec/embedding/dashboard/")
    assert response.status_code == 200
    row = _dashboard_row(response, "testapp.article", "hashing")
    assert (row["objects"], row["embedded"], row["stale"], row["pending"], row["failed"]) == (
        4,
        4,
        0,
        0,
        0,
    )
    with override_settings(EMBREC=NO_KICK):
        a0.title = "changed"
        a0.save()
    OutboxEntry.objects.create(
        content_type=ct, object_pk=str(a1.pk), state=OutboxEntry.FAILED, last_error="boom: bad"
    )
    Embedding.objects.filter(object_pk=str(a2.pk)).update(identity="old@1/64/norm")
    response = admin_client.get("/admin/embrec/embedding/dashboard/")
    row = _dashboard_row(response, "testapp.article", "hashing")
    assert (row["stale"], row["pending"], row["failed"], row["last_error"]) == (
        1,
        1,
        1,
        "boom: bad",
    )
    assert b"boom: bad" in response.content
    # The same counts as embrec_status.
    assert {k: v for k, v in row.items() if k not in ("last_error", "config_error")} == (
        indexing.status(registry.get("testapp.article"), "hashing")
    )


def test_dashboard_is_staff_only_with_view_permission(client, embedded_articles):
    url = "/admin/embrec/embedding/dashboard/"
    assert client.get(url).status_code == 302  # anonymous: to the login page
    staff = staff_client(client)
    assert staff.get(url).status_code == 403
    staff_user = User.objects.get(username="staff")
    staff_user.user_permissions.add(Permission.objects.get(codename="view_embedding"))
    assert staff.get(url).status_code == 200


def test_recompute_redirects_to_live_progress_that_follows_the_drain(admin_client, movies):
    with override_settings(EMBREC=NO_KICK):
        response = admin_client.post(
            "/admin/catalog/movie/",
            {"action": "recompute_embeddings", "_selected_action": [m.pk for m in movies]},
        )
    assert response.status_code == 302
    page_url = response["Location"]
    assert page_url.startswith("/admin/embrec/embedding/reindex-progress/?")
    page = admin_client.get(page_url)
    assert page.status_code == 200
    assert b"0 / 3 (0 %)" in page.content
    json_url = page.context["json_url"]
    assert json_url.startswith("/admin/embrec/embedding/reindex-progress.json?")

    def progress() -> dict:
        r = admin_client.get(json_url)
        assert r.status_code == 200
        return r.json()

    assert progress() == {
        "model": "catalog.movie",
        "total": 3,
        "done": 0,
        "pending": 3,
        "failed": 0,
        "percent": 0,
        "finished": False,
    }
    indexing.drain(batch_size=1, max_batches=1)
    first = progress()
    assert (first["done"], first["pending"], first["finished"]) == (1, 2, False)
    indexing.drain()
    last = progress()
    assert (last["done"], last["percent"], last["finished"]) == (3, 100, True)


def test_reindex_progress_json_rejects_bad_input_and_non_staff(client, admin_client, movies):
    ct = ContentType.objects.get_for_model(Movie)
    url = "/admin/embrec/embedding/reindex-progress.json"
    good = {"ct": ct.id, "after": 0, "upto": 0, "total": 0}
    assert admin_client.get(url, good).status_code == 200
    assert admin_client.get(url, {**good, "total": "x"}).status_code == 400
    assert admin_client.get(url, {"ct": ct.id}).status_code == 400
    page = "/admin/embrec/embedding/reindex-progress/"
    assert admin_client.get(page, {**good, "upto": -1}).status_code == 400
    ct_user = ContentType.objects.get_for_model(User)
    assert admin_client.get(url, {**good, "ct": ct_user.id}).status_code == 400
    admin_client.logout()
    assert client.get(url, good).status_code == 302  # not staff: to the login page
    staff = staff_client(client)
    assert staff.get(url, good).status_code == 403
    staff_user = User.objects.get(username="staff")
    staff_user.user_permissions.add(Permission.objects.get(codename="view_movie"))
    assert staff.get(url, good).status_code == 200


def test_registered_objects_change_form_links_to_similar_items(admin_client, movies):
    response = admin_client.get(f"/admin/catalog/movie/{movies[0].pk}/change/")
    assert response.status_code == 200
    url = f"/admin/embrec/embedding/preview/similar/catalog.movie/{movies[0].pk}/"
    assert f'href="{url}"'.encode() in response.content


def test_similar_preview_lists_the_nearest_objects(client, admin_client):
    near = Article.objects.create(title="red apples and green apples", category="c")
    also = Article.objects.create(title="red apples and green pears", category="c")
    Article.objects.create(title="quantum chromodynamics lecture", category="c")
    indexing.drain()
    url = f"/admin/embrec/embedding/preview/similar/testapp.article/{near.pk}/"
    response = admin_client.get(url)
    assert response.status_code == 200
    names = [str(r.object) for r in response.context["results"]]
    assert names[0] == str(also) and str(near) not in names
    assert admin_client.get(url.replace(str(near.pk), "999999")).status_code == 404
    assert (
        admin_client.get("/admin/embrec/embedding/preview/similar/auth.user/1/").status_code == 404
    )
    admin_client.logout()
    staff = staff_client(client)
    assert staff.get(url).status_code == 403


def test_user_recommendations_preview_needs_the_permission(client, admin_client):
    from embrec import record_interaction

    articles = [
        Article.objects.create(title=f"garden tomato {i}", category="c") for i in range(3)
    ] + [Article.objects.create(title=f"space rocket {i}", category="c") for i in range(3)]
    indexing.drain()
    reader = User.objects.create_user("reader", "r@example.com", "pw")
    record_interaction(reader, articles[0], "like")
    record_interaction(reader, articles[1], "like")
    indexing.drain()
    url = "/admin/embrec/embedding/preview/user/"
    query = {"user": reader.pk, "model": "testapp.article"}
    response = admin_client.get(url, query)
    assert response.status_code == 200
    names = [str(r.object) for r in response.context["results"]]
    assert names[0] == "garden tomato 2"
    assert "garden tomato 0" not in names  # already seen
    assert admin_client.get(url, {"user": "nobody", "model": "testapp.article"}).status_code == 200
    assert admin_client.get(url, {"user": reader.pk, "model": "x.y"}).status_code == 400
    admin_client.logout()
    staff = staff_client(client, "view_embedding", "view_article")
    assert staff.get(url, query).status_code == 403
    staff_user = User.objects.get(username="staff")
    staff_user.user_permissions.add(Permission.objects.get(codename="view_user_recommendations"))
    response = staff.get(url, query)
    assert response.status_code == 200
    assert b"garden tomato 2" in response.content
