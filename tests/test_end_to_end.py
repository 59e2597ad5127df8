"""The whole pipe: a save commits, a real Celery worker over Redis embeds the object with the
real MiniLM model, and the REST endpoint returns its neighbours."""

import pytest
from django.contrib.contenttypes.models import ContentType
from rest_framework.test import APIClient

from embrec.models import Embedding, OutboxEntry
from project.catalog.models import Movie
from tests.worker import (
    flush_broker,
    redis_available,
    start_worker,
    stop_worker,
    use_broker,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MOVIES = [
    ("Toy Story", 1995, "Animation Children's Comedy"),
    ("Aladdin", 1992, "Animation Children's Musical"),
    ("The Lion King", 1994, "Animation Children's Musical"),
    ("GoldenEye", 1995, "Action Adventure Thriller"),
    ("Die Hard", 1988, "Action Thriller"),
    ("Sleepless in Seattle", 1993, "Comedy Romance"),
]


def test_save_is_embedded_by_real_worker_and_served(tmp_path):
    assert redis_available(), "Redis must run on 127.0.0.1:6379 (.ci/run starts it)"
    flush_broker()
    worker = start_worker(logfile=tmp_path / "worker.log")
    try:
        with use_broker():
            for i, (title, year, genres) in enumerate(MOVIES, start=1):
                Movie.objects.create(movielens_id=i, title=title, year=year, genres=genres)
            ct = ContentType.objects.get_for_model(Movie)
            wait_for(
                lambda: Embedding.objects.filter(content_type=ct).count() == len(MOVIES),
                timeout=180,
                message="all movies embedded by the worker",
            )
        assert OutboxEntry.objects.count() == 0
        emb = Embedding.objects.filter(content_type=ct).first()
        assert emb.dimensions == 384
        assert emb.identity.startswith("all-MiniLM-L6-v2@")

        toy = Movie.objects.get(title="Toy Story")
        response = APIClient().get(f"/api/embrec/items/catalog.movie/{toy.pk}/similar/?limit=3")
        assert response.status_code == 200, response.content
        titles = [r["object"]["title"] for r in response.json()["results"]]
        assert "Toy Story" not in titles
        assert len(titles) == 3
        # The two other animated children's films are Toy Story's nearest neighbours.
        assert set(titles[:2]) == {"Aladdin", "The Lion King"}
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
