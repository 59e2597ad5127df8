"""Celery app for worker processes started by the tests: the demo app, with the test settings'
broker and eager mode off."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from project.celery import app  # noqa: E402

app.conf.task_always_eager = False
app.conf.broker_url = settings.CELERY_BROKER_URL

__all__ = ["app"]
