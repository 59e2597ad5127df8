"""``manage.py embrec_rebuild_popularity [--check]``.

Recounts the popularity tables from the interaction table. Triggers keep them current with every
interaction write; recount after ``TRUNCATE`` of the interaction table or writes with triggers
disabled (``session_replication_role = replica``, ``pg_restore --disable-triggers``).
``--check`` compares the stored counts with a fresh count instead and fails when they differ.
"""

from __future__ import annotations

from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError

from embrec.models import Interaction, PopularityCount
from embrec.popularity import (
    expire_popularity,
    popularity_from_interactions,
    rebuild_popularity,
    stored_popularity,
)


class Command(BaseCommand):
    help = (
        "Recount object popularity (distinct users with a positive interaction within "
        "EMBREC['POPULARITY_WINDOW_DAYS']) from the interaction table."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Compare the stored counts with a fresh count; change nothing.",
        )

    def handle(self, *args, check: bool = False, verbosity: int = 1, **options) -> None:
        if check:
            self._check(verbosity)
            return
        result = rebuild_popularity()
        if verbosity:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Popularity recounted: {result['objects']} object(s), "
                    f"{result['users']} (object, user) pair(s)."
                )
            )

    def _check(self, verbosity: int) -> None:
        expire_popularity()  # the stored window ends now, as the fresh count's does
        content_types = set(
            Interaction.objects.values_list("content_type_id", flat=True).distinct()
        ) | set(PopularityCount.objects.values_list("content_type_id", flat=True).distinct())
        wrong = 0
        for ct_id in sorted(content_types):
            stored = stored_popularity(ct_id)
            fresh = popularity_from_interactions(ct_id)
            differ = sorted(
                k for k in stored.keys() | fresh.keys() if stored.get(k) != fresh.get(k)
            )
            wrong += len(differ)
            if differ and verbosity:
                ct = ContentType.objects.get_for_id(ct_id)
                sample = ", ".join(
                    f"{k}: {stored.get(k, 0)} stored, {fresh.get(k, 0)} counted" for k in differ[:5]
                )
                self.stdout.write(f"{ct.app_label}.{ct.model}: {len(differ)} differ ({sample})")
        if wrong:
            raise CommandError(
                f"{wrong} object(s) have stored popularity that differs from the interactions; "
                "run manage.py embrec_rebuild_popularity."
            )
        if verbosity:
            self.stdout.write(self.style.SUCCESS("Stored popularity matches the interactions."))
