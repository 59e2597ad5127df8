"""``manage.py embrec_sweep [--older-than SECONDS] [--retry-failed]``.

Re-queues a drain task for outbox rows that have been pending too long (the broker was down when
they were saved, or the worker that held them died), and moves the popularity window forward.
Also starts the backfill of a new encoder version, switches one whose backfill is complete and
prunes retired ones past their grace period (:func:`embrec.switching.sweep`). Celery beat runs
the same sweep as the ``embrec.sweep`` task; this command is for cron or for an operator.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embrec import indexing, popularity, switching
from embrec.conf import embrec_settings


class Command(BaseCommand):
    help = "Re-kick outbox rows pending longer than EMBREC['SWEEP_AFTER'] seconds."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=None,
            help="Age in seconds (default: EMBREC['SWEEP_AFTER']).",
        )
        parser.add_argument(
            "--retry-failed",
            action="store_true",
            help="Also put failed rows back to pending (after fixing the cause).",
        )

    def handle(self, **options) -> None:
        older_than = options["older_than"]
        if older_than is not None and older_than < 0:
            raise CommandError("--older-than must not be negative.")
        if options["retry_failed"]:
            retried = indexing.retry_failed()
            self.stdout.write(f"{retried} failed row(s) put back to pending.")
        age = embrec_settings.SWEEP_AFTER if older_than is None else older_than
        count = indexing.sweep(older_than=age)
        dropped = popularity.expire_popularity()
        if dropped:
            self.stdout.write(f"{dropped} user(s) left object popularity (out of the window).")
        if count:
            self.stdout.write(
                self.style.SUCCESS(
                    f"{count} outbox row(s) pending for more than {age:g}s; drain task queued."
                )
            )
        else:
            self.stdout.write(f"No outbox row pending for more than {age:g}s.")
        versions = switching.sweep()
        if any(versions.values()):
            self.stdout.write(
                f"Encoder versions: {versions['backfills']} backfill(s) queued, "
                f"{versions['switched']} switched, {versions['pruned']} pruned."
            )
