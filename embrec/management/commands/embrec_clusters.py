"""``manage.py embrec_clusters app_label.Model [--encoder E] [--method kmeans|hdbscan] [-k N] [--json]``.

Clusters the stored vectors of one registered model (:func:`embrec.clusters.find`) and prints each
cluster's size, most typical items (nearest to its centroid) and most distinctive terms, then the
outliers: the items least similar to every centroid.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from embrec import clusters
from embrec.exceptions import AnalysisError


class Command(BaseCommand):
    help = "Cluster a model's vectors and name each cluster by its typical items and terms."

    def add_arguments(self, parser) -> None:
        parser.add_argument("label", metavar="app_label.Model")
        parser.add_argument("--encoder", default=None, help="Default: the model's first encoder.")
        parser.add_argument("--method", choices=clusters.METHODS, default="kmeans")
        parser.add_argument(
            "-k", "--clusters", type=int, default=clusters.CLUSTERS, help="k of k-means."
        )
        parser.add_argument(
            "--min-cluster-size",
            type=int,
            default=None,
            help="HDBSCAN's smallest cluster (default: 1%% of the sample, at least 5).",
        )
        parser.add_argument(
            "--min-samples",
            type=int,
            default=None,
            help="HDBSCAN's density parameter (default: --min-cluster-size).",
        )
        parser.add_argument(
            "--selection",
            choices=clusters.SELECTIONS,
            default="eom",
            help="HDBSCAN: eom (fewer, larger clusters) or leaf (the finest ones).",
        )
        parser.add_argument(
            "--reduce",
            type=int,
            default=clusters.REDUCE,
            help="HDBSCAN runs on this many principal components (0: all dimensions).",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=clusters.SAMPLE,
            help="Fit on at most this many vectors (all are assigned).",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--typical", type=int, default=5, help="Typical items per cluster.")
        parser.add_argument("--terms", type=int, default=8, help="Terms per cluster (0: none).")
        parser.add_argument("--outliers", type=int, default=20)
        parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")

    def handle(self, *args: str, **options) -> None:
        for name in ("typical", "terms", "outliers"):
            if options[name] < 0:
                raise CommandError(f"--{name} must not be negative (got {options[name]}).")
        try:
            result = clusters.find(
                options["label"],
                options["encoder"],
                method=options["method"],
                clusters=options["clusters"],
                min_cluster_size=options["min_cluster_size"],
                min_samples=options["min_samples"],
                selection=options["selection"],
                reduce=options["reduce"],
                sample=options["sample"],
                seed=options["seed"],
                typical=options["typical"],
                terms=options["terms"],
                outliers=options["outliers"],
            )
        except AnalysisError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))
            return
        params = ", ".join(f"{k}={v}" for k, v in result.params.items())
        self.stdout.write(
            f"{result.model} [{result.encoder}] {result.total} vectors ({result.identity}); "
            f"{result.method} ({params}) fitted on {result.sampled}: "
            f"{len(result.clusters)} clusters"
            + (f", {result.noise} noise" if result.method == "hdbscan" else "")
        )
        for cluster in result.clusters:
            self.stdout.write("")
            self.stdout.write(
                self.style.MIGRATE_HEADING(f"cluster {cluster.label}: {cluster.size} items")
            )
            if cluster.terms:
                terms = ", ".join(f"{term} ({score:.2f})" for term, score in cluster.terms)
                self.stdout.write(f"  terms: {terms}")
            for member in cluster.typical:
                self.stdout.write(f"  {member.similarity:.3f}  {member.name}")
        if result.outliers:
            self.stdout.write("")
            self.stdout.write(
                self.style.MIGRATE_HEADING("outliers (least similar to every cluster's centroid)")
            )
            for member in result.outliers:
                where = "noise" if member.cluster < 0 else f"cluster {member.cluster}"
                self.stdout.write(f"  {member.similarity:.3f}  {member.name}  [{where}]")
