"""``manage.py embrec_reindex [app_label.Model ...] [--encoder ALIAS] [--sync] [--batch-size N]``.

Queues every object of the given registered models (all of them by default) for embedding. Objects
whose text and encoder are unchanged are not re-encoded (unless ``--force``). With ``--sync`` the
outbox is drained in this process instead of by Celery workers, and missing HNSW indexes are built
at the end. ``--rebuild-index`` drops the models' HNSW indexes before queueing, so that a full
re-embed (a new model) loads without index maintenance; the index is built once, when the backlog
is gone (by the worker that empties it, here with ``--sync``, or by the sweeper).

When the settings name a new model for an alias (another identity), its vectors are backfilled
beside the live ones as a pending version (:mod:`embrec.versions`) and the alias switches once
the backfill is complete: at the end of ``--sync`` here, after the workers' drain otherwise
(``EMBREC["VERSION_AUTO_SWITCH"]``; ``manage.py embrec_switch`` switches by hand).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from embrec import indexing, switching
from embrec.conf import embrec_settings
from embrec.management.commands._common import (
    ProgressBar,
    positive,
    resolve_encoder,
    resolve_labels,
)
from embrec.versions import sync_all


class Command(BaseCommand):
    help = "Queue registered objects for (re)embedding; --sync drains in the foreground."

    def add_arguments(self, parser) -> None:
        parser.add_argument("labels", nargs="*", metavar="app_label.Model")
        parser.add_argument("--encoder", help="Only this encoder alias.")
        parser.add_argument(
            "--sync",
            action="store_true",
            help="Encode in this process instead of queueing work for Celery workers.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Objects per page and per encoding batch (default: EMBREC['BATCH_SIZE']).",
        )
        parser.add_argument(
            "--force", action="store_true", help="Re-encode even objects whose text is unchanged."
        )
        parser.add_argument(
            "--rebuild-index",
            action="store_true",
            help="Drop the HNSW indexes first and build them once the vectors are written "
            "(full re-embeds: much faster than maintaining the index row by row).",
        )

    def handle(self, *args: str, **options) -> None:
        labels = options["labels"]
        recs = resolve_labels(labels)
        encoder = options["encoder"]
        resolve_encoder(recs, encoder)
        batch_size = options["batch_size"]
        positive(batch_size, "--batch-size")
        batch_size = batch_size or int(embrec_settings.BATCH_SIZE)
        sync = options["sync"]
        quiet = options["verbosity"] == 0

        if options["rebuild_index"]:
            for rec in recs:
                try:
                    dropped = indexing.drop_indexes(rec, encoder)
                except ImproperlyConfigured as exc:
                    raise CommandError(str(exc)) from None
                for name in dropped:
                    self.stdout.write(f"{rec.label}: dropped index {name}; rebuilt after the load.")

        aliases = {encoder} if encoder else {a for rec in recs for a in rec.get_encoders()}
        sync = options["sync"]
        for version in sync_all(aliases):
            self.stdout.write(
                f"Encoder {version.alias!r}: new version {version.identity} is backfilled beside "
                f"the live one; queries keep reading the live version until the switch."
            )
        for version in switching.start_backfills(kick=not sync):
            self.stdout.write(f"Encoder {version.alias!r}: every object queued for the backfill.")

        queued: dict[str, int] = {}
        for rec in recs:
            total = rec.get_queryset().count()
            bar = None if quiet else ProgressBar(self.stdout, total, f"queue {rec.label}")
            try:
                queued[rec.label] = indexing.reindex(
                    rec,
                    encoder=encoder,
                    force=options["force"],
                    batch_size=batch_size,
                    progress=bar.update if bar else None,
                    kick=not sync,
                )
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
            if bar:
                bar.close()

        for label, count in queued.items():
            self.stdout.write(f"{label}: {count} object(s) queued.")
        if not sync:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Queued {sum(queued.values())} object(s); "
                    f"workers on queue {embrec_settings.QUEUE!r} will embed them."
                )
            )
            return

        pending = indexing.pending_count()
        bar = None if quiet else ProgressBar(self.stdout, pending, "encode")
        try:
            result = indexing.drain(
                batch_size=batch_size,
                on_batch=(lambda batch: bar.update(batch.claimed)) if bar else None,
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if bar:
            bar.close()
        # The drain builds the indexes it deferred; this also builds those dropped by
        # --rebuild-index when nothing needed re-encoding.
        try:
            specs = [spec for rec in recs for spec in indexing.index_specs(rec, encoder)]
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        built = result.indexes_built + indexing.build_deferred_indexes(specs)
        if built:
            self.stdout.write(f"Built index(es) after the load: {', '.join(built)}.")
        style = self.style.WARNING if result.failed else self.style.SUCCESS
        self.stdout.write(
            style(
                f"Done in {result.seconds:.1f}s: {result.claimed} outbox row(s) processed, "
                f"{result.encoded} vector(s) written, {result.unchanged} unchanged, "
                f"{result.deleted} removed, {result.failed} failed."
            )
        )
        if result.failed:
            self.stdout.write("See `manage.py embrec_status` and the Embedding admin for errors.")
        for version in switching.after_drain():
            self.stdout.write(
                self.style.SUCCESS(f"Encoder {version.alias!r} switched to {version.identity}.")
            )
