"""The demo's pages in a real browser: Playwright driving Chromium against ``live_server``.

Chromium comes from the system (``apt-get install chromium``; ``.ci/run`` installs it), not from
Playwright's own download. Movies are embedded with the real MiniLM model before the browser
starts.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.db import connections
from playwright.sync_api import expect, sync_playwright

from embrec import indexing
from embrec.models import OutboxEntry
from project.catalog.models import Movie
from tests.moviepages import ANIMATION, SCI_FI_SEQUELS, make_movies, make_users, use_demo_weights
from tests.testapp.models import Article

CHROMIUM = os.environ.get("EMBREC_TEST_CHROMIUM", "/usr/bin/chromium")

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _demo_weights(settings):
    use_demo_weights(settings)


@pytest.fixture
def catalog(live_server):
    movies = make_movies()
    make_users(movies)
    return movies


@contextmanager
def browser_page(live_server):
    """A fresh Chromium page; opened after the database setup, closed before its teardown."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install -y chromium (or set EMBREC_TEST_CHROMIUM)."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.set_default_timeout(20_000)
            page.base_url = live_server.url
            yield page
        finally:
            browser.close()


def off_the_event_loop(func, *args, **kwargs):
    """Run ``func`` (ORM work) in a thread: Playwright's sync API keeps an event loop in this one,
    where Django refuses database calls."""

    def call():
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()  # this thread's connections only

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def pending_count() -> int:
    return OutboxEntry.objects.filter(state=OutboxEntry.PENDING).count()


def card_titles(page, testid: str) -> list[str]:
    return page.get_by_test_id(testid).locator(".card .title").all_inner_texts()


def screenshot(page, tmp_path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_pages_render_and_a_search_returns_results(live_server, catalog, tmp_path):
    star_wars = catalog["Star Wars"].pk
    with browser_page(live_server) as page:
        page.goto(live_server.url + "/")
        expect(page).to_have_title("Home · embrec demo")
        expect(page.get_by_role("heading", name="Popular")).to_be_visible()
        assert "Fargo" in card_titles(page, "popular")
        # The stylesheet loaded: the header is dark.
        background = page.locator("header.site").evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        assert background == "rgb(29, 35, 48)"

        page.get_by_label("Describe what you feel like watching").fill("cartoon for kids")
        page.get_by_role("button", name="Search").last.click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Movies for “cartoon for kids”")
        assert card_titles(page, "search-results")[0] in ANIMATION | {"Toy Story"}

        page.goto(f"{live_server.url}/movies/{star_wars}/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Star Wars")
        assert set(card_titles(page, "similar")[:2]) == SCI_FI_SEQUELS

        response = page.goto(live_server.url + "/movies/424242/")
        assert response.status == 404
        expect(page.get_by_role("heading", level=1)).to_have_text("Not found")


def test_a_like_changes_the_for_you_list(live_server, catalog, tmp_path):
    star_wars = catalog["Star Wars"].pk
    with browser_page(live_server) as page:
        page.goto(live_server.url + "/")
        page.get_by_label("User number").fill("1")
        page.get_by_role("button", name="Browse as").click()
        expect(page.get_by_test_id("browsing-user")).to_have_text("ml1")
        before = card_titles(page, "for-you")
        assert before[0] in ANIMATION
        expect(page.get_by_text("Because you loved Toy Story").first).to_be_visible()
        screenshot(page, tmp_path, "home.png")

        page.goto(f"{live_server.url}/movies/{star_wars}/")
        movie = page.get_by_role("article", name="Star Wars")
        movie.get_by_role("button", name="Like Star Wars (1977)", exact=True).click()
        expect(page.get_by_role("status")).to_contain_text("you like Star Wars (1977)")
        # The page shows the user's updated recommendations right away.
        after = card_titles(page, "for-you")
        assert after[0] in SCI_FI_SEQUELS
        assert after != before[: len(after)]
        screenshot(page, tmp_path, "movie.png")

        page.goto(live_server.url + "/")
        assert card_titles(page, "for-you")[0] in SCI_FI_SEQUELS
        expect(page.get_by_text("Because you liked Star Wars").first).to_be_visible()


def test_admin_embedding_map_draws_points_and_names_them_on_hover(live_server):
    for i in range(6):
        Article.objects.create(title=f"Fruit article {i}", body="apple banana cherry", category="a")
        Article.objects.create(title=f"Space article {i}", body="rocket planet orbit", category="b")
    indexing.drain()
    User.objects.create_superuser("boss", "boss@example.com", "pw")
    names = {str(a.pk): str(a) for a in Article.objects.all()}
    with browser_page(live_server) as page:
        page.goto(live_server.url + "/admin/login/?next=/admin/embrec/embedding/dashboard/")
        page.get_by_label("Username").fill("boss")
        page.get_by_label("Password").fill("pw")
        page.get_by_role("button", name="Log in").click()
        page.locator('tr[data-model="testapp.article"] td.map a').click()
        circles = page.locator("#embrec-map circle")
        expect(circles).to_have_count(12)
        expect(page.locator("#embrec-map-status")).to_contain_text("12 of 12 vectors")
        first = circles.first
        pk = first.get_attribute("data-pk")
        first.hover()
        tooltip = page.locator("#embrec-map-tooltip")
        expect(tooltip).to_be_visible()
        expect(tooltip).to_have_text(names[pk])
        # Colour by a field: the legend lists its values.
        page.locator("#embrec-map-color").select_option("category")
        expect(page.locator("#embrec-map-legend")).to_contain_text("a (6)")
        first.click()
        expect(page).to_have_url(f"{live_server.url}/admin/testapp/article/{pk}/change/")


def test_admin_reindex_action_shows_live_progress_to_100_percent(live_server, settings):
    # Saves and actions only queue work (no kick): the test drains while the page polls.
    settings.EMBREC = {**settings.EMBREC, "AUTO_KICK": False}
    movies = [
        Movie.objects.create(movielens_id=i, title=f"Movie {i}", year=1990 + i) for i in (1, 2, 3)
    ]
    indexing.drain()  # embedded once (loads the model before the browser starts)
    assert not OutboxEntry.objects.exists()
    User.objects.create_superuser("boss", "boss@example.com", "pw")
    with browser_page(live_server) as page:
        page.goto(live_server.url + "/admin/login/?next=/admin/catalog/movie/")
        page.get_by_label("Username").fill("boss")
        page.get_by_label("Password").fill("pw")
        page.get_by_role("button", name="Log in").click()
        for movie in movies:
            page.locator(f'input[name="_selected_action"][value="{movie.pk}"]').check()
        page.locator('select[name="action"]').select_option("recompute_embeddings")
        page.locator('button[name="index"]').click()
        expect(page).to_have_url(re.compile(r"/admin/embrec/embedding/reindex-progress/\?"))
        text = page.locator("#embrec-progress-text")
        expect(text).to_have_text("0 / 3 (0 %)")
        assert off_the_event_loop(pending_count) == 3

        # The page polls the JSON endpoint and follows the workers' drain.
        assert off_the_event_loop(indexing.drain, batch_size=1, max_batches=1).encoded == 1
        expect(text).to_have_text("1 / 3 (33 %)")
        assert off_the_event_loop(indexing.drain).encoded == 2
        expect(text).to_have_text("3 / 3 (100 %)")
        expect(page.locator("#embrec-progress")).to_have_attribute("value", "3")
        expect(page.locator("#embrec-progress-detail")).to_have_text("pending: 0, failed: 0")
