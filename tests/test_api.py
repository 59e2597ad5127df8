"""REST endpoints: results, visibility, permissions, throttling and every kind of bad input."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.cache import cache
from rest_framework import serializers
from rest_framework.test import APIClient
from rest_framework.throttling import AnonRateThrottle

import embrec
from embrec.conf import DEFAULTS
from embrec.models import Interaction, UserEmbedding
from tests.readpath import brute_force, make_catalog, make_user, text_vector
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db

BASE = "/api/embrec"


class TwoPerMinute(AnonRateThrottle):
    rate = "2/min"


class ArticleCardSerializer(serializers.ModelSerializer):
    class Meta:
        model = Article
        fields = ["id", "title", "category", "price"]


@pytest.fixture
def client():
    return APIClient()


@pytest.fixture
def catalog(settings):
    settings.EMBREC = {**settings.EMBREC, "EF_SEARCH": 400}
    return make_catalog()


def login(client, user):
    client.force_authenticate(user)
    return client


def pks(response):
    return [r["pk"] for r in response.json()["results"]]


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"detail", "code"}
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def test_similar_matches_brute_force_and_uses_registration_serializer(client, catalog, monkeypatch):
    rec = embrec.registry.get(Article)
    monkeypatch.setattr(rec, "serializer_class", "tests.test_api.ArticleCardSerializer")
    source = catalog[21]
    response = client.get(f"{BASE}/items/testapp.article/{source.pk}/similar/?limit=12")
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "testapp.article" and body["limit"] == 12
    others = [a for a in catalog if a.pk != source.pk]
    expected = brute_force(text_vector(rec.get_text(source)), others)
    got = [(r["pk"], r["score"]) for r in body["results"]]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected[:12]], abs=1e-5)
    assert pks(response)[:3] == [pk for pk, _ in expected[:3]]
    first = body["results"][0]
    assert first["source"] == "similar"
    assert set(first["object"]) == {"id", "title", "category", "price"}
    assert str(first["object"]["id"]) == first["pk"]


def test_recommendations_for_scifi_fan_with_explanations(client, catalog):
    user = make_user("fan")
    scifi = [a for a in catalog if a.category == "scifi"]
    login(client, user)
    response = client.post(
        f"{BASE}/interactions/",
        {
            "events": [
                {"type": "testapp.article", "pk": str(a.pk), "kind": "like"} for a in scifi[:3]
            ]
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json() == {"recorded": 3}
    response = client.get(f"{BASE}/recommendations/?type=testapp.article&limit=5")
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 5
    assert {r["source"] for r in results} == {"personal"}
    assert {r["object"]["label"].split()[0] for r in results} == {"scifi"}
    assert not {str(a.pk) for a in scifi[:3]} & set(pks(response))
    explanation = results[0]["explanation"]
    assert explanation and explanation[0]["kind"] == "like"
    assert explanation[0]["pk"] in {str(a.pk) for a in scifi[:3]}
    no_explain = client.get(f"{BASE}/recommendations/?type=testapp.article&limit=5&explain=false")
    assert pks(no_explain) == pks(response)
    assert no_explain.json()["results"][0]["explanation"] is None


def test_interactions_endpoint_accepts_single_list_and_batch(client, catalog):
    user = make_user("poster")
    login(client, user)
    one = {"type": "testapp.article", "pk": str(catalog[0].pk), "kind": "view"}
    assert client.post(f"{BASE}/interactions/", one, format="json").status_code == 201
    listed = [one, {**one, "kind": "dislike"}]
    assert client.post(f"{BASE}/interactions/", listed, format="json").json() == {"recorded": 2}
    kinds = sorted(Interaction.objects.filter(user=user).values_list("kind", flat=True))
    assert kinds == ["dislike", "view", "view"]
    # Events are stored; vectors are recomputed by a task after commit, not here.
    assert not UserEmbedding.objects.filter(user=user).exists()


def test_interactions_bad_input(client, catalog, settings):
    user = make_user("bad")
    url = f"{BASE}/interactions/"
    assert_error(client.post(url, {}, format="json"), 403, "not_authenticated")
    login(client, user)
    good = {"type": "testapp.article", "pk": str(catalog[0].pk), "kind": "like"}
    assert_error(client.post(url, {**good, "kind": "teleport"}, format="json"), 400, "unknown_kind")
    assert_error(
        client.post(url, {**good, "type": "nope.nope"}, format="json"), 404, "unknown_type"
    )
    assert_error(client.post(url, {**good, "pk": "999999"}, format="json"), 404, "not_found")
    assert_error(client.post(url, {**good, "pk": "abc"}, format="json"), 404, "not_found")
    body = assert_error(
        client.post(url, {"type": "testapp.article"}, format="json"), 400, "required"
    )
    assert "events" in body["errors"]
    assert_error(client.post(url, {"events": []}, format="json"), 400, "empty")
    future = {**good, "at": "2999-01-01T00:00:00Z"}
    assert_error(client.post(url, future, format="json"), 400, "invalid")
    settings.EMBREC = {**settings.EMBREC, "MAX_INTERACTION_BATCH": 2}
    assert_error(client.post(url, [good] * 3, format="json"), 400, "batch_too_large")
    # A batch with one bad event stores nothing.
    Article.objects.filter(pk=catalog[1].pk).update(published=False)
    hidden = {**good, "pk": str(catalog[1].pk)}
    assert_error(client.post(url, [good, hidden], format="json"), 404, "not_found")
    assert not Interaction.objects.exists()


def test_similar_bad_input(client, catalog):
    pk = catalog[0].pk
    url = f"{BASE}/items/testapp.article/{pk}/similar/"
    assert_error(client.get(f"{BASE}/items/nope.nope/{pk}/similar/"), 404, "unknown_type")
    assert_error(client.get(f"{BASE}/items/testapp.article/999999/similar/"), 404, "not_found")
    assert_error(client.get(f"{BASE}/items/testapp.article/abc/similar/"), 404, "not_found")
    for bad in ["abc", "0", "-2", "101", "2.5", ""]:
        if bad == "":
            assert client.get(f"{url}?limit=").status_code == 200  # empty means default
            continue
        body = assert_error(client.get(f"{url}?limit={bad}"), 400, "invalid_limit")
        assert body["field"] == "limit"
    assert_error(client.get(f"{url}?title=x"), 400, "unknown_filter")
    assert_error(client.get(f"{url}?published=false"), 400, "unknown_filter")
    assert_error(client.get(f"{url}?price__regex=1"), 400, "unknown_filter")
    assert_error(client.get(f"{url}?price__gte=cheap"), 400, "invalid_filter")
    assert_error(client.get(f"{url}?mmr_lambda=2"), 400, "invalid")
    assert_error(client.get(f"{url}?popularity=0.8&recency=0.8"), 400, "invalid")
    assert_error(client.get(f"{url}?exclude_seen=maybe"), 400, "invalid")


def test_not_embedded_is_a_clear_status(client):
    article = Article.objects.create(title="brand new", body="waiting for a worker")
    response = client.get(f"{BASE}/items/testapp.article/{article.pk}/similar/")
    body = assert_error(response, 409, "not_embedded")
    assert body["state"] == "pending"
    assert "results" not in body


def test_search_and_its_bad_input(client, catalog):
    url = f"{BASE}/search/"
    response = client.get(
        url, {"q": "robot starship galaxy laser", "type": "testapp.article", "limit": 5}
    )
    assert response.status_code == 200
    assert {r["source"] for r in response.json()["results"]} == {"search"}
    assert {r["object"]["label"].split()[0] for r in response.json()["results"]} == {"scifi"}
    for q in ["", "   "]:
        assert_error(client.get(url, {"q": q, "type": "testapp.article"}), 400, "empty_query")
    assert_error(client.get(url, {"type": "testapp.article"}), 400, "empty_query")
    body = assert_error(
        client.get(url, {"q": "x" * 513, "type": "testapp.article"}), 400, "query_too_long"
    )
    assert body["field"] == "q"
    assert_error(client.get(url, {"q": "robot", "type": "nope.nope"}), 404, "unknown_type")
    assert_error(client.get(url, {"q": "robot"}), 400, "type_required")  # two registrations
    assert_error(
        client.get(url, {"q": "robot", "type": "testapp.article", "limit": "x"}),
        400,
        "invalid_limit",
    )
    assert_error(
        client.get(url, {"q": "robot", "type": "testapp.article", "body": "x"}),
        400,
        "unknown_filter",
    )


def test_recommendations_permissions(client, catalog):
    url = f"{BASE}/recommendations/?type=testapp.article"
    assert_error(client.get(url), 403, "not_authenticated")
    alice, bob = make_user("alice"), make_user("bob")
    staff = make_user("staff", staff=True)
    embrec.record_interaction(bob, catalog[0], "like")
    login(client, alice)
    assert_error(client.get(f"{url}&user={bob.pk}"), 403, "permission_denied")
    assert client.get(f"{url}&user={alice.pk}").status_code == 200
    # Staff status alone does not expose another user's history.
    login(client, staff)
    body = assert_error(client.get(f"{url}&user={bob.pk}"), 403, "permission_denied")
    assert "embrec.view_user_recommendations" in body["detail"]
    staff.user_permissions.add(
        Permission.objects.get(
            codename="view_user_recommendations", content_type__app_label="embrec"
        )
    )
    staff = get_user_model().objects.get(pk=staff.pk)  # permissions are cached per instance
    superuser = get_user_model().objects.create_superuser("root", password="pw")
    for viewer in (staff, superuser):
        login(client, viewer)
        response = client.get(f"{url}&user={bob.pk}&limit=3")
        assert response.status_code == 200
        assert {r["source"] for r in response.json()["results"]} == {"personal"}
        assert str(catalog[0].pk) not in pks(response)
        assert_error(client.get(f"{url}&user=999999"), 404, "not_found")
        assert_error(client.get(f"{url}&user=abc"), 404, "not_found")
    # The permission works without staff status too.
    carol = make_user("carol")
    carol.user_permissions.add(Permission.objects.get(codename="view_user_recommendations"))
    login(client, get_user_model().objects.get(pk=carol.pk))
    assert client.get(f"{url}&user={bob.pk}").status_code == 200


def test_new_user_gets_popular_and_anonymous_gets_popular_endpoint(client, catalog):
    fans = [make_user(f"f{i}") for i in range(2)]
    for fan in fans:
        embrec.record_interaction(fan, catalog[30], "purchase")
    login(client, make_user("newbie"))
    response = client.get(f"{BASE}/recommendations/?type=testapp.article&limit=3")
    results = response.json()["results"]
    assert results[0]["pk"] == str(catalog[30].pk)
    assert results[0]["source"] == "popular" and results[0]["similarity"] is None
    assert {r["source"] for r in results[1:]} == {"recent"}
    anonymous = APIClient().get(f"{BASE}/items/testapp.article/popular/?limit=3")
    assert anonymous.status_code == 200
    assert pks(anonymous) == pks(response)


def test_hidden_items_never_leak_through_any_endpoint(client, catalog):
    scifi = [a for a in catalog if a.category == "scifi"]
    # Embedded while visible, then hidden: their vectors are still in the table.
    Article.objects.filter(pk=scifi[1].pk).update(published=False)
    Article.objects.filter(pk=scifi[2].pk).update(tenant="acme")
    hidden = {str(scifi[1].pk), str(scifi[2].pk)}
    viewer = make_user("viewer", tenant="globex")
    fan = make_user("acmefan", tenant="acme")
    for item in (scifi[1], scifi[2], scifi[0]):
        Interaction.objects.create(
            user=viewer,
            content_type_id=_ct(),
            object_pk=str(item.pk),
            kind="like",
            weight=3.0,
        )  # liked before they were hidden
    login(client, viewer)
    responses = [
        client.get(f"{BASE}/items/testapp.article/{scifi[0].pk}/similar/?limit=100"),
        client.get(f"{BASE}/search/?type=testapp.article&q=robot+galaxy&limit=100"),
        client.get(f"{BASE}/recommendations/?type=testapp.article&limit=100&exclude_seen=false"),
        client.get(f"{BASE}/items/testapp.article/popular/?limit=100"),
    ]
    for response in responses:
        assert response.status_code == 200
        text = response.content.decode()
        assert not hidden & set(pks(response))
        assert scifi[1].title not in text and scifi[2].title not in text  # not in explanations
        assert len(pks(response)) >= 77
    # A hidden object answers exactly like a missing one.
    for pk in hidden:
        missing = client.get(f"{BASE}/items/testapp.article/{pk}/similar/")
        assert_error(missing, 404, "not_found")
    # The tenant's own user does see the tenant's item.
    login(client, fan)
    own = client.get(f"{BASE}/search/?type=testapp.article&q={scifi[2].title}&limit=3")
    assert pks(own)[0] == str(scifi[2].pk)


def _ct():
    from django.contrib.contenttypes.models import ContentType

    return ContentType.objects.get_for_model(Article).id


def test_filters_and_exclusions_still_fill_limit(client, catalog):
    user = make_user("filler")
    cooking = [a for a in catalog if a.category == "cooking"]
    for item in cooking[:5]:
        embrec.record_interaction(user, item, "like")
    login(client, user)
    cheap = [a for a in cooking[5:] if a.price <= 60]
    response = client.get(
        f"{BASE}/recommendations/?type=testapp.article&category=cooking&price__lte=60"
        f"&limit={len(cheap)}"
    )
    assert response.status_code == 200
    assert sorted(pks(response)) == sorted(str(a.pk) for a in cheap)
    assert {r["source"] for r in response.json()["results"]} == {"personal"}
    source = cooking[0]
    similar = client.get(
        f"{BASE}/items/testapp.article/{source.pk}/similar/?category=cooking"
        f"&price__lte=60&exclude_seen=true&limit={len(cheap)}"
    )
    assert sorted(pks(similar)) == sorted(str(a.pk) for a in cheap)


def test_permission_and_throttle_classes_come_from_settings(client, catalog, settings):
    url = f"{BASE}/items/testapp.article/{catalog[0].pk}/similar/"
    settings.EMBREC = {
        **settings.EMBREC,
        "API_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    }
    assert_error(client.get(url), 403, "not_authenticated")
    settings.EMBREC = {
        **settings.EMBREC,
        "API_PERMISSION_CLASSES": None,
        "API_THROTTLE_CLASSES": ["tests.test_api.TwoPerMinute"],
    }
    cache.clear()
    assert client.get(url).status_code == 200
    assert client.get(url).status_code == 200
    assert_error(client.get(url), 429, "throttled")
    cache.clear()


def test_mmr_and_blend_parameters_change_the_ranking(client, catalog):
    url = f"{BASE}/search/?type=testapp.article&q=robot+kiss+recipe+goal&limit=8"
    plain = pks(client.get(url))
    assert pks(client.get(url + "&mmr_lambda=1")) == plain
    assert pks(client.get(url + "&mmr_lambda=0.2")) != plain
    fans = [make_user(f"p{i}") for i in range(2)]
    last = plain[-1]
    for fan in fans:
        embrec.record_interaction(fan, Article.objects.get(pk=last), "purchase")
    assert pks(client.get(url + "&popularity=0.5"))[0] == last


@pytest.mark.slow
def test_search_with_the_real_minilm_model(client):
    from embrec import indexing
    from project.catalog.models import Movie

    movies = [
        ("Toy Story", 1995, "Animation Children's Comedy"),
        ("The Lion King", 1994, "Animation Children's Musical"),
        ("GoldenEye", 1995, "Action Adventure Thriller"),
        ("Die Hard", 1988, "Action Thriller"),
        ("Sleepless in Seattle", 1993, "Comedy Romance"),
    ]
    for i, (title, year, genres) in enumerate(movies, start=1):
        Movie.objects.create(movielens_id=i, title=title, year=year, genres=genres)
    indexing.drain()
    response = client.get(f"{BASE}/search/", {"type": "catalog.movie", "q": "cartoon for kids"})
    assert response.status_code == 200, response.content
    titles = [r["object"]["title"] for r in response.json()["results"]]
    assert set(titles[:2]) == {"Toy Story", "The Lion King"}
    filtered = client.get(
        f"{BASE}/search/", {"type": "catalog.movie", "q": "explosions", "year__gte": 1990}
    )
    assert {r["object"]["year"] >= 1990 for r in filtered.json()["results"]} == {True}
    assert "Die Hard" not in [r["object"]["title"] for r in filtered.json()["results"]]


def test_recommendations_default_to_the_configured_popularity_share(client, catalog, settings):
    user = make_user("share")
    scifi = [a for a in catalog if a.category == "scifi"]
    for item in scifi[:3]:
        embrec.record_interaction(user, item, "like")
    url = f"{BASE}/recommendations/?type=testapp.article&limit=8"
    login(client, user)
    plain = client.get(url).json()["results"]
    assert all(r["score"] == pytest.approx(r["similarity"]) for r in plain)
    # A popular item far from the user's taste.
    far = next(a for a in catalog if a.category == "cooking")
    for n in range(4):
        embrec.record_interaction(make_user(f"cook{n}"), far, "purchase")
    settings.EMBREC = {**settings.EMBREC, "RECOMMEND_POPULARITY": 0.9}
    default = client.get(url).json()["results"]
    assert default[0]["pk"] == str(far.pk) and default[0]["source"] == "personal"
    assert pks(client.get(url + "&popularity=0.9")) == [r["pk"] for r in default]
    assert pks(client.get(url + "&popularity=0")) == [r["pk"] for r in plain]
    assert [r.pk for r in embrec.recommend(user, model=Article, limit=8)] == pks(client.get(url))


def test_throttles_are_on_by_default_with_configurable_rates(client, catalog, settings):
    url = f"{BASE}/items/testapp.article/{catalog[0].pk}/similar/"
    search = f"{BASE}/search/?type=testapp.article&q=robot"
    # The defaults: anonymous, per-user and search throttles, each with its own rate.
    settings.EMBREC = {**settings.EMBREC, "THROTTLE_RATES": {"anon": "3/min"}}
    for _ in range(3):
        assert client.get(url).status_code == 200
    response = client.get(url)
    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    # Another client (IP) is counted apart; a signed-in user gets the user rate.
    assert client.get(url, REMOTE_ADDR="10.0.0.2").status_code == 200
    login(client, make_user("reader"))
    assert client.get(url).status_code == 200
    cache.clear()
    settings.EMBREC = {**settings.EMBREC, "THROTTLE_RATES": {"user": "3/min", "search": "1/min"}}
    assert client.get(search).status_code == 200
    # Search has the tighter rate of its own scope; other endpoints still answer (every
    # request, throttled or not, counts towards the user rate).
    assert_error(client.get(search), 429, "throttled")
    assert client.get(url).status_code == 200
    assert_error(client.get(url), 429, "throttled")
    # None turns a throttle off.
    cache.clear()
    settings.EMBREC = {**settings.EMBREC, "THROTTLE_RATES": {"user": None, "search": None}}
    for _ in range(5):
        assert client.get(search).status_code == 200


def test_default_rates():
    assert DEFAULTS["THROTTLE_RATES"] == {"anon": "100/min", "user": "1000/min", "search": "30/min"}
    assert DEFAULTS["API_THROTTLE_CLASSES"]
