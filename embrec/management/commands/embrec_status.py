"""``manage.py embrec_status [app_label.Model ...] [--json]``.

For each registered model and encoder: how many objects are indexable, how many have a vector,
how many of those are stale (written by another encoder identity: the model, its revision, its
dimensions or its normalisation changed), how many objects wait in the outbox and how many failed.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from embrec import indexing
from embrec.management.commands._common import resolve_labels

COLUMNS = ["model", "encoder", "objects", "embedded", "stale", "pending", "failed"]


class Command(BaseCommand):
    help = "Show per model and encoder: objects, embedded, stale, pending, failed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("labels", nargs="*", metavar="app_label.Model")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args: str, **options) -> None:
        labels = options["labels"]
        rows = []
        for row, error in indexing.status_rows(resolve_labels(labels)):
            if error:
                self.stderr.write(f"{row['model']} [{row['encoder']}]: {error}")
            rows.append(row)
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        table = [COLUMNS] + [
            [str(row[c]) if row[c] is not None else "?" for c in COLUMNS] for row in rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
        for n, line in enumerate(table):
            cells = [
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells))
            if n == 0:
                self.stdout.write("  ".join("-" * w for w in widths))
