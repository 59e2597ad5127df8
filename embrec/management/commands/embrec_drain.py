"""``manage.py embrec_drain [--batch-size N] [--max-batches N] [--max-seconds S]``.

Processes the outbox in the foreground, exactly as a Celery worker would (several can run at
once, with workers or each other), including the backfill of a new encoder version and the switch
to it once complete (:func:`embrec.switching.drain_and_switch`). Useful without Celery, in cron, or to debug an encoder.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from embrec import indexing, switching
from embrec.management.commands._common import ProgressBar, positive


class Command(BaseCommand):
    help = "Drain the embrec outbox in this process."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=None)
        parser.add_argument("--max-batches", type=int, default=None)
        parser.add_argument("--max-seconds", type=float, default=None)

    def handle(self, **options) -> None:
        positive(options["batch_size"], "--batch-size")
        positive(options["max_batches"], "--max-batches")
        if options["max_seconds"] is not None and options["max_seconds"] <= 0:
            raise CommandError("--max-seconds must be positive.")
        bar = None
        if options["verbosity"] > 0:
            bar = ProgressBar(self.stdout, indexing.pending_count(), "drain")
        try:
            result = switching.drain_and_switch(
                batch_size=options["batch_size"],
                max_batches=options["max_batches"],
                max_seconds=options["max_seconds"],
                on_batch=(lambda batch: bar.update(batch.claimed)) if bar else None,
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if bar:
            bar.close()
        style = self.style.WARNING if result.failed else self.style.SUCCESS
        self.stdout.write(
            style(
                f"{result.batches} batch(es), {result.claimed} row(s) in {result.seconds:.1f}s: "
                f"{result.encoded} written, {result.unchanged} unchanged, "
                f"{result.deleted} removed, {result.failed} failed; "
                f"{indexing.pending_count()} still pending."
            )
        )
