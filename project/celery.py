"""Celery application of the demo project.

The broker comes from ``CELERY_BROKER_URL`` (Redis or RabbitMQ in production). With none set, a
filesystem transport under ``.embrec/broker`` is used: zero configuration, one machine only.
"""

import logging
import os
from pathlib import Path

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def warm_up_encoders(sender=None, **kwargs) -> None:
    """In ``manage.py demo``'s encoding worker: load every registration's encoders before the
    first task, then touch the file the demo waits for (``EMBREC_DEMO_READY_FILE``)."""
    ready_file = os.environ.get("EMBREC_DEMO_READY_FILE")
    if not ready_file:
        return
    # Imported here: this module is imported before Django's apps are ready.
    from embrec.encoders import get_encoder
    from embrec.registry import registry

    for rec in registry.all():
        for alias in rec.get_encoders():
            try:
                get_encoder(alias).encode(["warm-up"])
            except Exception as exc:  # a model that cannot load shows up on the first task
                logging.getLogger("embrec").warning("Could not warm up %r: %s", alias, exc)
    Path(ready_file).touch()
