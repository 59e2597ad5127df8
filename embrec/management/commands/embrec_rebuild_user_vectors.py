"""``manage.py embrec_rebuild_user_vectors`` — recompute user vectors from all interactions."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embrec.exceptions import NotRegistered
from embrec.interactions import rebuild_user_vectors
from embrec.registry import registry


class Command(BaseCommand):
    help = (
        "Recompute every user vector from the interactions table (after changing interaction "
        "weights, the half-life, or an encoder). Users are read by keyset pages; vectors of "
        "users without interactions are removed."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "labels", nargs="*", help="Registered models (app_label.model); default: all."
        )
        parser.add_argument("--user", action="append", dest="users", help="Only this user pk.")
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args, labels=(), users=None, batch_size=500, verbosity=1, **options):
        try:
            recs = [registry.get(label) for label in labels] or registry.all()
        except NotRegistered as exc:
            raise CommandError(str(exc)) from None
        if batch_size <= 0:
            raise CommandError("--batch-size must be positive.")
        total = 0
        for rec in recs:
            seen = 0

            def progress(done, written, rec=rec):
                nonlocal seen
                seen += done
                if verbosity > 1:
                    self.stdout.write(f"{rec.label}: {seen} users")

            written = rebuild_user_vectors(
                rec.model, user_ids=users, batch_size=batch_size, progress=progress
            )
            total += written
            if verbosity:
                self.stdout.write(f"{rec.label}: {written} user vectors written ({seen} users).")
        if verbosity:
            self.stdout.write(self.style.SUCCESS(f"Done: {total} user vectors written."))
