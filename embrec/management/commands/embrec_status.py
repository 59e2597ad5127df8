"""``manage.py embrec_status [app_label.Model ...] [--json]``.

For each registered model and encoder: how many objects are indexable, how many have a vector,
how many of those are stale (written by another encoder identity: the model, its revision, its
dimensions or its normalisation changed), how many objects wait in the outbox and how many failed.
While a new model is backfilled beside the live one, ``live`` and ``next`` name both versions
(:mod:`embrec.versions`) and ``progress`` how far the backfill is (``--json`` adds
``next_embedded``, the new version's vector count).
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from embrec import indexing
from embrec.management.commands._common import resolve_labels

COLUMNS = ["model", "encoder", "objects", "embedded", "stale", "pending", "failed"]
#: Shown when any row has a registered version (text columns, left-aligned).
VERSION_COLUMNS = ["live", "next", "progress"]


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
        columns = list(COLUMNS)
        if any(row["live"] for row in rows):
            columns += VERSION_COLUMNS
        table = [columns] + [[_cell(row, c) for c in columns] for row in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
        for n, line in enumerate(table):
            cells = [
                cell.ljust(w) if i < 2 or columns[i] in VERSION_COLUMNS else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells))
            if n == 0:
                self.stdout.write("  ".join("-" * w for w in widths))


def _cell(row: dict, column: str) -> str:
    value = row[column]
    if column in VERSION_COLUMNS:
        if value is None:
            return "-"
        return f"{value:g} %" if column == "progress" else str(value)
    return str(value) if value is not None else "?"
