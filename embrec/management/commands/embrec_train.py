"""``manage.py embrec_train [ALIAS ...] [--no-reindex]``: train item2vec encoders now.

Trains each named item2vec encoder (default: every configured one) from the ``Interaction``
table in this process, then queues re-embedding of the affected registrations when the model
changed (the ``embrec.train_item2vec`` Celery task does the same from a worker or beat).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from embrec.conf import embrec_settings


class Command(BaseCommand):
    help = "Train item2vec encoders from the recorded interactions and queue re-embedding."

    def add_arguments(self, parser) -> None:
        parser.add_argument("aliases", nargs="*", metavar="ALIAS")
        parser.add_argument(
            "--no-reindex", action="store_true", help="Train only; do not queue re-embedding."
        )

    def handle(self, *args: str, **options) -> None:
        from embrec.encoders import get_encoder
        from embrec.encoders.item2vec import Item2VecEncoder, train_and_reindex

        configured = [
            name
            for name in embrec_settings.ENCODERS
            if str(embrec_settings.ENCODERS[name].get("CLASS", "")).endswith("Item2VecEncoder")
        ]
        names = list(options["aliases"] or args) or configured
        if not names:
            raise CommandError("No item2vec encoder is configured in EMBREC['ENCODERS'].")
        for name in names:
            try:
                encoder = get_encoder(name)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
            if not isinstance(encoder, Item2VecEncoder):
                raise CommandError(f"Encoder {name!r} is not an item2vec encoder.")
            try:
                summary = train_and_reindex(name, reindex=not options["no_reindex"])
            except ValueError as exc:
                raise CommandError(f"{name}: {exc}") from None
            self.stdout.write(
                f"{name}: revision {summary['revision']} ({summary['items']} items from "
                f"{summary['sequences']} users, {summary['interactions']} interactions); "
                f"{summary['queued']} objects queued for re-embedding."
            )
