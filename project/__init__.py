"""embrec demo project: MovieLens-100k movies recommended with embeddings."""

from project.celery import app as celery_app

__all__ = ["celery_app"]
