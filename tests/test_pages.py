"""The demo's pages through Django's test client: content, errors, CSRF and the user switcher."""

import re

import pytest
from django.test import Client

from project.catalog.browsing import SESSION_KEY
from project.catalog.models import Movie
from tests.moviepages import (
    ANIMATION,
    SCI_FI_SEQUELS,
    make_movies,
    make_users,
    use_demo_weights,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _demo_weights(settings):
    use_demo_weights(settings)


@pytest.fixture
def movies():
    return make_movies()


@pytest.fixture
def users(movies):
    return make_users(movies)


def titles(html: str, testid: str) -> list[str]:
    """Titles of the movie cards in the list marked ``data-testid=testid``, in order."""
    block = re.search(rf'data-testid="{testid}">(.*?)</ol>', html, re.S)
    assert block, f"no {testid} list on the page"
    return re.findall(r'class="title" href="/movies/\d+/">([^<]+)</a>', block.group(1))


def browse_as(client, number) -> object:
    return client.post("/browse-as/", {"user": str(number), "next": "/"})


def test_home_lists_popular_movies_and_invites_to_choose_a_user(client, users):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    popular = titles(html, "popular")
    # Fargo has two fans, Godfather, Star Wars and Scream one each.
    assert popular[0] == "Fargo"
    assert set(popular[1:4]) == {"Godfather, The", "Star Wars", "Scream"}
    assert "Unreleased Cut" not in html
    assert "Choose a MovieLens user" in html
    assert 'data-testid="for-you"' not in html


def test_browsing_as_a_user_shows_explained_recommendations(client, users):
    response = browse_as(client, 1)
    assert response.status_code == 302 and response["Location"] == "/"
    html = client.get("/").content.decode()
    assert 'data-testid="browsing-user">ml1<' in html
    for_you = titles(html, "for-you")
    assert for_you[0] in ANIMATION
    assert "Toy Story" not in for_you  # already seen
    assert "Because you loved Toy Story" in html


def test_a_like_changes_the_for_you_list(client, users, movies):
    browse_as(client, "ml1")
    before = titles(client.get("/").content.decode(), "for-you")
    star_wars = movies["Star Wars"]
    response = client.post(
        f"/movies/{star_wars.pk}/rate/", {"kind": "like", "next": "/"}, follow=True
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Noted: you like Star Wars (1977)" in html
    after = titles(html, "for-you")
    assert after != before
    assert after[0] in SCI_FI_SEQUELS
    assert "Star Wars" not in after
    assert "Because you liked Star Wars" in html


def test_a_dislike_hides_the_movie_everywhere_for_that_user(client, users, movies):
    browse_as(client, 1)
    aladdin = movies["Aladdin"]
    client.post(f"/movies/{aladdin.pk}/rate/", {"kind": "dislike"})
    toy_story = client.get(f"/movies/{movies['Toy Story'].pk}/").content.decode()
    assert "Aladdin" not in titles(toy_story, "similar")
    assert "Aladdin" not in titles(client.get("/").content.decode(), "for-you")


def test_movie_page_shows_details_and_similar_movies(client, movies):
    star_wars = movies["Star Wars"]
    response = client.get(f"/movies/{star_wars.pk}/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1" in html and "Star Wars</h1>" in html
    assert '<span class="genre">Sci-Fi</span>' in html
    similar = titles(html, "similar")
    assert set(similar[:2]) == SCI_FI_SEQUELS
    assert "Star Wars" not in similar and "Unreleased Cut" not in similar
    # Without a browsing user there is nothing to rate with.
    assert 'name="kind"' not in html


def test_movie_page_says_when_a_movie_is_not_embedded_yet(client, movies):
    new = Movie.objects.create(movielens_id=5000, title="Brand New", year=1998, genres="Drama")
    response = client.get(f"/movies/{new.pk}/")
    assert response.status_code == 200
    assert "queued for embedding" in response.content.decode()


def test_search_finds_movies_by_meaning(client, movies):
    response = client.get("/search/", {"q": "cartoon for kids"})
    assert response.status_code == 200
    found = titles(response.content.decode(), "search-results")
    assert found[0] in ANIMATION | {"Toy Story"}
    assert "Unreleased Cut" not in found


@pytest.mark.parametrize("query", ["", "   ", "x" * 5000])
def test_bad_search_text_is_a_400_page(client, movies, query):
    response = client.get("/search/", {"q": query})
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()


def test_search_page_without_a_query_shows_the_form(client, db):
    response = client.get("/search/")
    assert response.status_code == 200
    assert 'name="q"' in response.content.decode()
    assert client.head("/search/").status_code == 200
    assert client.post("/search/", {"q": "x"}).status_code == 405


@pytest.mark.parametrize(
    "path", ["/movies/999999/", "/movies/abc/", "/movies/99999999999999999999/"]
)
def test_unknown_movies_are_404_pages(client, movies, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "Not found" in response.content.decode()


def test_unpublished_movies_are_404(client, movies, users):
    hidden = movies["Unreleased Cut"]
    assert client.get(f"/movies/{hidden.pk}/").status_code == 404
    browse_as(client, 1)
    assert client.post(f"/movies/{hidden.pk}/rate/", {"kind": "like"}).status_code == 404


@pytest.mark.parametrize(
    "value", ["", "0", "ml0", "943", "ml", "ml1 x", "admin", "ml4", "1" * 300, "ml1\x00"]
)
def test_the_switcher_rejects_unknown_and_privileged_accounts(client, users, value):
    response = client.post("/browse-as/", {"user": value, "next": "/search/"})
    assert response.status_code == 400
    assert SESSION_KEY not in client.session
    # The switcher on the error page sends the visitor back where they came from.
    assert 'name="next" value="/search/"' in response.content.decode()


def test_the_switcher_never_signs_in_nor_grants_admin_rights(client, users):
    ml2 = users[1]
    ml2.is_staff = True
    ml2.save()
    assert browse_as(client, 2).status_code == 400  # staff accounts cannot be chosen
    browse_as(client, 1)
    assert client.session[SESSION_KEY] == users[0].pk
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still the login page
    assert client.get("/api/embrec/recommendations/?limit=3").status_code in (401, 403)
    # An account given admin rights later is dropped from the session, not used.
    ml1 = users[0]
    ml1.is_superuser = True
    ml1.save()
    html = client.get("/").content.decode()
    assert 'data-testid="browsing-user"' not in html
    assert SESSION_KEY not in client.session


def test_random_user_and_stop(client, users):
    assert client.post("/browse-as/", {"user": "random"}).status_code == 302
    assert client.session[SESSION_KEY] in {u.pk for u in users}
    client.post("/browse-as/", {"action": "stop"})
    assert SESSION_KEY not in client.session


def test_redirects_stay_on_this_site(client, users, movies):
    response = client.post("/browse-as/", {"user": "1", "next": "https://evil.example/"})
    assert response["Location"] == "/"
    pk = movies["Fargo"].pk
    response = client.post(f"/movies/{pk}/rate/", {"kind": "like", "next": "//evil.example/"})
    assert response["Location"] == f"/movies/{pk}/"


def test_rating_needs_a_browsing_user_and_a_known_kind(client, users, movies):
    pk = movies["Fargo"].pk
    response = client.post(f"/movies/{pk}/rate/", {"kind": "like"})
    assert response.status_code == 403
    assert "Choose a MovieLens user" in response.content.decode()
    browse_as(client, 1)
    for kind in ("", "love", "purchase", "nonsense"):
        assert client.post(f"/movies/{pk}/rate/", {"kind": kind}).status_code == 400
    assert client.get(f"/movies/{pk}/rate/").status_code == 405
    assert client.get("/browse-as/").status_code == 405


def test_forms_need_their_csrf_token(users, movies):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/browse-as/", {"user": "1"}).status_code == 403
    html = client.get("/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert (
        client.post("/browse-as/", {"user": "1", "csrfmiddlewaretoken": token}).status_code == 302
    )
    pk = movies["Fargo"].pk
    response = client.post(f"/movies/{pk}/rate/", {"kind": "like"})
    assert response.status_code == 403
    assert "The form has expired" in response.content.decode()
    html = client.get(f"/movies/{pk}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    response = client.post(f"/movies/{pk}/rate/", {"kind": "like", "csrfmiddlewaretoken": token})
    assert response.status_code == 302


def test_the_stylesheet_is_one_static_file(client, db):
    html = client.get("/search/").content.decode()
    assert html.count('rel="stylesheet"') == 1
    assert "/static/catalog/site.css" in html
    assert "<script" not in html


def test_pages_work_on_an_empty_catalog(client, db):
    assert "No movies yet" in client.get("/").content.decode()
    response = client.get("/search/", {"q": "space adventure"})
    assert response.status_code == 200
    assert "No movies found" in response.content.decode()


def test_for_you_next_to_a_movie_leaves_that_movie_out(client, users, movies):
    browse_as(client, 1)
    lion_king = movies["Lion King, The"]
    html = client.get(f"/movies/{lion_king.pk}/").content.decode()
    for_you = titles(html, "for-you")
    assert for_you and "Lion King, The" not in for_you
    assert "Aladdin" in for_you


def test_explanations_read_as_a_sentence():
    from embrec.read.results import Explanation
    from project.catalog.templatetags.catalog import because

    def item(title, kind):
        return Explanation(object=title, pk=title, kind=kind, weight=1.0, contribution=1.0)

    assert because([]) == ""
    assert because([item("Alien", "love")]) == "Because you loved Alien"
    assert because([item("Alien", "like"), item("Heat", "love")]) == (
        "Because you liked Alien, and loved Heat"
    )
    assert (
        because([item("Alien", "love"), item("Heat", "love"), item("Fargo", "view")])
        == "Because you loved Alien and Heat, and watched Fargo"
    )


def test_the_switcher_can_be_turned_off(client, users, settings):
    browse_as(client, 1)
    settings.DEMO_USER_SWITCHER = False
    html = client.get("/").content.decode()
    assert "Demo only" not in html
    assert 'data-testid="browsing-user"' not in html
    assert client.post("/browse-as/", {"user": "2"}).status_code == 404
    # A signed-in user still gets personal recommendations.
    client.force_login(users[0])
    assert "Because you loved Toy Story" in client.get("/").content.decode()


def test_error_templates_render_without_the_page_context(client, db):
    from django.template.loader import render_to_string

    response = client.get("/", HTTP_HOST="evil.example")  # not in ALLOWED_HOSTS
    assert response.status_code == 400
    assert "Bad request" in response.content.decode()
    assert "Something went wrong" in render_to_string("500.html")
