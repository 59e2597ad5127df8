"""``manage.py embrec_switch [ALIAS ...] [--force] [--prune [--grace SECONDS]]``.

Makes the pending version of each given encoder alias (every alias with one, by default) live:
builds its HNSW indexes, rebuilds users' vectors for it, then flips the alias in one transaction
(:func:`embrec.switching.switch`). Refuses while the backfill is incomplete unless ``--force``.
With ``--prune``, deletes instead the vectors and indexes of versions retired more than
``EMBREC["VERSION_GRACE_PERIOD"]`` seconds ago (``--grace`` overrides it).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from embrec import switching
from embrec.models import EncoderVersion


class Command(BaseCommand):
    help = "Switch encoder aliases to their backfilled pending version, or prune retired ones."

    def add_arguments(self, parser) -> None:
        parser.add_argument("aliases", nargs="*", metavar="ALIAS")
        parser.add_argument(
            "--force",
            action="store_true",
            help="Switch even though the backfill is incomplete (objects without a vector of "
            "the new version drop out of results until they are embedded).",
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="Delete retired versions past their grace period instead of switching.",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=None,
            help="With --prune: seconds since retirement (default EMBREC['VERSION_GRACE_PERIOD']).",
        )

    def handle(self, *args, **options) -> None:
        if options["prune"]:
            grace = options["grace"]
            if grace is not None and grace < 0:
                raise CommandError("--grace must not be negative.")
            pruned = switching.prune(grace=grace)
            for version in pruned:
                self.stdout.write(f"Pruned {version.alias!r} version {version.identity}.")
            self.stdout.write(self.style.SUCCESS(f"{len(pruned)} retired version(s) pruned."))
            return
        if options["grace"] is not None:
            raise CommandError("--grace only applies with --prune.")
        pending = set(
            EncoderVersion.objects.filter(state=EncoderVersion.PENDING).values_list(
                "alias", flat=True
            )
        )
        aliases = options["aliases"] or sorted(pending)
        if not aliases:
            self.stdout.write("No encoder has a pending version.")
            return
        for alias in aliases:
            try:
                version = switching.switch(alias, force=options["force"])
            except switching.SwitchError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(
                self.style.SUCCESS(f"Encoder {alias!r} switched to {version.identity}.")
            )
