"""``manage.py embrec_duplicates app_label.Model [--encoder E] [--threshold 0.95] [--json]``.

Near-duplicate pairs (cosine similarity at least ``--threshold``) and isolated items (whose
nearest neighbour is least similar) of one registered model, found with one HNSW index probe per
item (:func:`embrec.duplicates.find`). ``--explain`` prints the plan of one batch of probes.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from embrec import duplicates
from embrec.exceptions import AnalysisError


class Command(BaseCommand):
    help = "List near-duplicate pairs and isolated items of a model, found with the HNSW index."

    def add_arguments(self, parser) -> None:
        parser.add_argument("label", metavar="app_label.Model")
        parser.add_argument("--encoder", default=None, help="Default: the model's first encoder.")
        parser.add_argument(
            "--threshold",
            default=duplicates.THRESHOLD,
            help="Cosine similarity from which two items are reported, in (0, 1].",
        )
        parser.add_argument(
            "--neighbours", type=int, default=duplicates.NEIGHBOURS, help="Neighbours per item."
        )
        parser.add_argument("--limit", type=int, default=duplicates.LIMIT, help="Most pairs shown.")
        parser.add_argument("--isolated", type=int, default=20, help="Isolated items shown.")
        parser.add_argument("--ef-search", type=int, default=None)
        parser.add_argument("--explain", action="store_true", help="Print the probes' plan.")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")

    def handle(self, *args: str, **options) -> None:
        if options["ef_search"] is not None and options["ef_search"] < 1:
            raise CommandError(f"--ef-search must be at least 1 (got {options['ef_search']}).")
        try:
            threshold = duplicates.clean_threshold(options["threshold"])
            if options["explain"]:
                self.stdout.write(
                    duplicates.explain(
                        options["label"],
                        options["encoder"],
                        neighbours=options["neighbours"],
                        ef_search=options["ef_search"],
                    )
                )
                return
            report = duplicates.find(
                options["label"],
                options["encoder"],
                threshold=threshold,
                neighbours=options["neighbours"],
                limit=options["limit"],
                isolated=options["isolated"],
                ef_search=options["ef_search"],
            )
        except AnalysisError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
            return
        more = " (best shown; raise --limit for more)" if report.truncated else ""
        self.stdout.write(
            f"{report.model} [{report.encoder}] {report.probed} items probed, "
            f"{report.neighbours} neighbours each: {len(report.pairs)} pairs with cosine "
            f">= {report.threshold:g}{more}, in {len(report.groups)} groups"
        )
        for pair in report.pairs:
            self.stdout.write(
                f"  {pair.similarity:.4f}  {pair.a.name} [{pair.a.pk}]  ~  {pair.b.name} [{pair.b.pk}]"
            )
        if report.isolated:
            self.stdout.write("")
            self.stdout.write(
                self.style.MIGRATE_HEADING("isolated (least similar nearest neighbour)")
            )
            for row in report.isolated:
                self.stdout.write(
                    f"  {row.similarity:.4f}  {row.item.name} [{row.item.pk}]  "
                    f"(nearest: {row.neighbour.name})"
                )
