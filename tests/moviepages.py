"""A small movie catalog for the demo pages' tests, embedded with the real MiniLM model."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

import embrec
from embrec import indexing
from project.catalog.models import Movie

#: Real MovieLens-100k titles, years and genres (typed in, not read from the data set).
MOVIES = [
    (50, "Star Wars", 1977, "Action Adventure Romance Sci-Fi War"),
    (181, "Return of the Jedi", 1983, "Action Adventure Romance Sci-Fi War"),
    (172, "Empire Strikes Back, The", 1980, "Action Adventure Drama Romance Sci-Fi War"),
    (183, "Alien", 1979, "Action Horror Sci-Fi Thriller"),
    (1, "Toy Story", 1995, "Animation Children's Comedy"),
    (95, "Aladdin", 1992, "Animation Children's Comedy Musical"),
    (71, "Lion King, The", 1994, "Animation Children's Musical"),
    (88, "Sleepless in Seattle", 1993, "Comedy Romance"),
    (216, "When Harry Met Sally...", 1989, "Comedy Romance"),
    (288, "Scream", 1996, "Horror Thriller"),
    (100, "Fargo", 1996, "Crime Drama Thriller"),
    (127, "Godfather, The", 1972, "Action Crime Drama"),
]
SCI_FI_SEQUELS = {"Return of the Jedi", "Empire Strikes Back, The"}
ANIMATION = {"Aladdin", "Lion King, The"}


def use_demo_weights(settings) -> None:
    """The demo's interaction kinds (MovieLens 5 stars are a ``love``)."""
    from project import settings as demo

    settings.EMBREC = {**settings.EMBREC, "INTERACTION_WEIGHTS": demo.EMBREC["INTERACTION_WEIGHTS"]}


def make_movies() -> dict[str, Movie]:
    """The catalog above plus one unpublished movie, embedded now by the real write path."""
    movies = Movie.objects.bulk_create(
        [
            Movie(movielens_id=ml_id, title=title, year=year, genres=genres)
            for ml_id, title, year, genres in MOVIES
        ]
        + [Movie(movielens_id=9999, title="Unreleased Cut", year=1999, published=False)]
    )
    embrec.mark_dirty(Movie.objects.all())
    indexing.drain()
    return {movie.title: movie for movie in movies}


def make_users(movies: dict[str, Movie]):
    """``ml1`` loved Toy Story a year ago (a new like outweighs it); ``ml2`` and ``ml3`` make a
    few movies popular now; a superuser; ``ml4``, given staff status, may not be browsed as."""
    User = get_user_model()
    ml1, ml2, ml3 = (User.objects.create_user(f"ml{n}") for n in (1, 2, 3))
    User.objects.create_superuser("admin", password="admin")
    User.objects.create_user("ml4", is_staff=True)  # not a MovieLens account any more
    year_ago = timezone.now() - timedelta(days=365)
    embrec.record_interaction(ml1, movies["Toy Story"], "love", at=year_ago)
    for title in ("Fargo", "Godfather, The", "Star Wars"):
        embrec.record_interaction(ml2, movies[title], "love")
    for title in ("Fargo", "Scream"):
        embrec.record_interaction(ml3, movies[title], "like")
    return ml1, ml2, ml3
