"""Celery application of the demo project.

The broker comes from ``CELERY_BROKER_URL`` (Redis or RabbitMQ in production). With none set, a
filesystem transport under ``.embrec/broker`` is used: zero configuration, one machine only.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
