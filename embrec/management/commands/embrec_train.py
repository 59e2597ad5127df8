"""``manage.py embrec_train [ALIAS ...] [--no-reindex]``: train encoders on interactions now.

Trains each named trained encoder — item2vec, ALS (default: every configured one) — from the
``Interaction`` table in this process, then queues re-embedding of the affected registrations
(the encoder itself and every hybrid or adaptive hybrid built on it) when the model changed. The
``embrec.train_item2vec`` Celery task does the same for one alias from a worker or beat.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from embrec.encoders import get_encoder
from embrec.encoders.trained import TrainedEncoder, trained_aliases
from embrec.training import train_and_reindex


class Command(BaseCommand):
    help = "Train the encoders learned from interactions (item2vec, ALS) and queue re-embedding."

    def add_arguments(self, parser) -> None:
        parser.add_argument("aliases", nargs="*", metavar="ALIAS")
        parser.add_argument(
            "--no-reindex", action="store_true", help="Train only; do not queue re-embedding."
        )

    def handle(self, *args: str, **options) -> None:

        names = list(options["aliases"] or args) or trained_aliases()
        if not names:
            raise CommandError(
                "No encoder trained on interactions (item2vec, ALS) is configured in "
                "EMBREC['ENCODERS']."
            )
        for name in names:
            try:
                encoder = get_encoder(name)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
            if not isinstance(encoder, TrainedEncoder):
                raise CommandError(
                    f"Encoder {name!r} is not trained on interactions (item2vec, ALS)."
                )
            try:
                summary = train_and_reindex(name, reindex=not options["no_reindex"])
            except ValueError as exc:
                raise CommandError(f"{name}: {exc}") from None
            self.stdout.write(
                f"{name}: revision {summary['revision']} ({summary['items']} items from "
                f"{summary['sequences']} users, {summary['interactions']} interactions); "
                f"{summary['queued']} objects queued for re-embedding."
            )
