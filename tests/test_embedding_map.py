"""The admin's embedding map: PCA projection, k-means, the cached task result, the pages."""

import socket

import numpy as np
import pytest
import redis
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import transaction
from django.test import override_settings

from embrec import embedding_map, indexing, tasks
from embrec.registry import registry
from embrec.storage import VectorRow, write_vectors
from project.catalog.models import Movie
from tests.adminpages import login
from tests.settings import EMBREC
from tests.testapp.models import Article
from tests.worker import REDIS_URL, flush_broker, redis_available, use_broker

pytestmark = pytest.mark.django_db

FRUIT = "apple banana cherry mango peach plum grape lemon"
SPACE = "rocket planet orbit comet galaxy nebula asteroid moon"


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def two_groups():
    """Ten fruit articles and ten space articles (hashing encoder), embedded."""
    fruit, space = [], []
    words_a, words_b = FRUIT.split(), SPACE.split()
    for i in range(10):
        a = " ".join(words_a[j % 8] for j in range(i, i + 6))
        b = " ".join(words_b[j % 8] for j in range(i, i + 6))
        fruit.append(Article.objects.create(title=f"fruit{i}", body=a, category="food"))
        space.append(Article.objects.create(title=f"space{i}", body=b, category="sky"))
    indexing.drain()
    return fruit, space


def article_map(**kwargs):
    return embedding_map.build(registry.get(Article), "hashing", **kwargs)


def test_projection_shape_range_and_determinism():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(50, 16))
    coords = embedding_map.project(vectors)
    assert coords.shape == (50, 2)
    assert coords.min() >= 0 and coords.max() <= 1
    assert np.array_equal(coords, embedding_map.project(vectors.copy()))
    assert embedding_map.project(np.zeros((0, 4))).shape == (0, 2)
    assert np.allclose(embedding_map.project(np.ones((3, 4))), 0.5)


def test_projection_is_the_first_two_principal_components():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 10)) * np.arange(1, 11)  # distinct variances
    coords = embedding_map.project(x)
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    for c in range(2):
        # Up to the sign and one common scale, the coordinates are U·S of the data's SVD.
        assert abs(np.corrcoef(coords[:, c], u[:, c] * s[c])[0, 1]) > 0.9999
    spans = coords.max(axis=0) - coords.min(axis=0)
    assert np.isclose(spans[0], 1.0) and np.isclose(
        spans[1] / spans[0], s[1] * np.ptp(u[:, 1]) / (s[0] * np.ptp(u[:, 0]))
    )


def test_map_of_a_model_without_vectors_is_empty():
    result = article_map()
    assert result["total"] == result["sampled"] == 0 and result["points"] == []


def test_kmeans_finds_two_blobs():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.1, (20, 5)), rng.normal(5, 0.1, (20, 5))])
    labels = embedding_map.kmeans(x, 2, seed=3)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1
    assert labels[0] != labels[20]
    assert np.array_equal(labels, embedding_map.kmeans(x, 2, seed=3))


def test_map_of_two_groups_separates_them(two_groups, monkeypatch):
    monkeypatch.setattr(embedding_map, "MAX_DISTINCT", 5)
    fruit, space = two_groups
    result = article_map(clusters=2)
    assert result["total"] == result["sampled"] == 20
    by_pk = {p["pk"]: p for p in result["points"]}
    xs_fruit = [by_pk[str(a.pk)]["x"] for a in fruit]
    xs_space = [by_pk[str(a.pk)]["x"] for a in space]
    # The first principal component puts the groups on either side of a gap.
    assert max(xs_fruit) < min(xs_space) or max(xs_space) < min(xs_fruit)
    assert len({by_pk[str(a.pk)]["cluster"] for a in fruit}) == 1
    assert len({by_pk[str(a.pk)]["cluster"] for a in space}) == 1
    assert by_pk[str(fruit[0].pk)]["cluster"] != by_pk[str(space[0].pk)]["cluster"]
    assert by_pk[str(fruit[0].pk)]["name"] == "fruit0"
    assert by_pk[str(fruit[0].pk)]["values"]["category"] == "food"
    # Fields with many distinct values are not offered as colours.
    assert "category" in result["fields"] and "title" not in result["fields"]
    cache.clear()
    assert article_map(clusters=2)["points"] == result["points"]


def test_map_is_bounded_and_the_sample_seeded(two_groups):
    first = article_map(max_points=7, seed=5)
    assert first["total"] == 20 and first["sampled"] == 7
    cache.clear()
    assert article_map(max_points=7, seed=5)["points"] == first["points"]
    other = article_map(max_points=7, seed=6)
    assert {p["pk"] for p in other["points"]} != {p["pk"] for p in first["points"]}


@pytest.mark.django_db(transaction=True)
def test_map_is_cached_until_vectors_change(two_groups):
    # Committed writes: ``updated_at`` is the writing transaction's time.
    rec = registry.get(Article)
    assert embedding_map.cached(rec, "hashing")[1] is None
    tasks.embedding_map.delay("testapp.article", "hashing")
    assert embedding_map.cached(rec, "hashing")[1]["sampled"] == 20
    article = two_groups[0][0]
    article.body = "completely different words now"
    article.save()
    indexing.drain()
    assert embedding_map.cached(rec, "hashing")[1] is None


def test_task_ignores_unknown_models():
    assert tasks.embedding_map("nope.model", "hashing") == {"points": 0}


URL = "/admin/embrec/embedding/map/testapp.article/"
JSON_URL = "/admin/embrec/embedding/map/testapp.article.json"


def test_json_endpoint_computes_and_returns_the_map(client, two_groups):
    login(client, superuser=True)
    response = client.get(JSON_URL)  # eager Celery in tests: computed during the request
    assert response.status_code == 200
    data = response.json()
    assert data["ready"] is True and data["sampled"] == 20 and len(data["points"]) == 20
    assert data["change_url"] == "/admin/testapp/article/__pk__/change/"
    point = data["points"][0]
    assert set(point) == {"pk", "name", "x", "y", "cluster", "values"}
    # Served from the cache now, without queueing another task.
    assert client.get(JSON_URL).json()["points"] == data["points"]


def test_json_endpoint_reports_a_map_being_computed(client, two_groups, settings):
    login(client, superuser=True)
    rec = registry.get(Article)
    key, _ = embedding_map.cached(rec, "hashing")
    cache.set(f"{key}:queued", True)  # a task is already queued for these vectors
    response = client.get(JSON_URL)
    assert response.status_code == 202 and response.json() == {"ready": False}


def test_map_page_is_linked_from_the_dashboard(client, two_groups):
    login(client, superuser=True)
    dashboard = client.get("/admin/embrec/embedding/dashboard/")
    assert f'href="{URL}?encoder=hashing"'.encode() in dashboard.content
    page = client.get(URL)
    assert page.status_code == 200
    assert b'id="embrec-map"' in page.content
    assert JSON_URL.encode() in page.content


def test_map_needs_the_models_view_permission(client, two_groups):
    login(client, "view_embedding")
    assert client.get(URL).status_code == 403
    assert client.get(JSON_URL).status_code == 403
    client.logout()
    User.objects.all().delete()
    login(client, "view_article")
    assert client.get(URL).status_code == 200
    assert client.get(JSON_URL).status_code == 200


def test_map_needs_staff(client, two_groups):
    user = User.objects.create_user("plain", "p@example.com", "pw")
    user.user_permissions.set(Permission.objects.filter(codename="view_article"))
    client.force_login(user)
    response = client.get(JSON_URL)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_map_bad_input(client, two_groups):
    login(client, superuser=True)
    assert client.get("/admin/embrec/embedding/map/nope.model/").status_code == 404
    assert client.get("/admin/embrec/embedding/map/nope.model.json").status_code == 404
    response = client.get(JSON_URL + "?encoder=glove")
    assert response.status_code == 400 and "hashing" in response.json()["error"]
    assert client.get(URL + "?encoder=glove").status_code == 400


def test_demo_movies_are_coloured_by_their_first_genre(client):
    with override_settings(EMBREC={**EMBREC, "AUTO_KICK": False}):
        movies = [
            Movie.objects.create(movielens_id=1, title="Toy Story", genres="Animation Comedy"),
            Movie.objects.create(movielens_id=2, title="Heat", genres="Action Crime"),
            Movie.objects.create(movielens_id=3, title="Up", genres="Animation"),
        ]
    ct = ContentType.objects.get_for_model(Movie)
    rows = [
        VectorRow(str(m.pk), np.array([i, 1.0 - i, 0.5], dtype=np.float32), "h")
        for i, m in enumerate(movies)
    ]
    with transaction.atomic():
        write_vectors(ct.id, "default", "m@1/3/norm", rows)
    login(client, superuser=True)
    data = client.get("/admin/embrec/embedding/map/catalog.movie.json?encoder=default").json()
    assert data["fields"] == ["genres"]
    genres = {p["name"]: p["values"]["genres"] for p in data["points"]}
    assert genres == {"Toy Story": "Animation", "Heat": "Action", "Up": "Animation"}
    assert data["change_url"] == "/admin/catalog/movie/__pk__/change/"


@pytest.mark.django_db(transaction=True)
def test_json_endpoint_queues_the_task_once_and_reports_a_broker_outage(client, two_groups):
    login(client, superuser=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"  # nothing listens there
    with use_broker(dead):
        response = client.get(JSON_URL)
    assert response.status_code == 503
    assert response.json()["ready"] is False and "Could not queue" in response.json()["error"]
    if not redis_available():
        pytest.fail(f"Redis is needed at {REDIS_URL} (set EMBREC_TEST_REDIS_URL).")
    flush_broker()
    try:
        with use_broker():
            # The failed attempt left no "queued" mark: this poll queues the task, the next
            # ones wait for it.
            assert client.get(JSON_URL).status_code == 202
            assert client.get(JSON_URL).status_code == 202
        queued = redis.Redis.from_url(REDIS_URL).lrange("embrec", 0, -1)
        assert len(queued) == 1 and b"embrec.embedding_map" in queued[0]
    finally:
        flush_broker()
