"""``manage.py embrec_evaluate [app_label.Model] [--k 10] [--holdout 10] [--methods ...]``.

Offline evaluation on the site's own interactions: a temporal leave-last-N-out split (each user's
``--holdout`` most recent distinct items are held out), then Recall@K, NDCG@K, HitRate@K and
catalog coverage for the baselines (random, popularity, item-kNN, implicit ALS) and embrec's
encoders, all trained on the training part only. ``--json`` and ``--png`` write the results as
JSON and as a chart. ``--intrinsic`` instead compares the text encoders (GloVe, MiniLM) on word
similarity, analogies and document similarity. See :mod:`embrec.evaluation`.
"""

from __future__ import annotations

import math
import platform
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from embrec.registry import NotRegistered, registry


class Command(BaseCommand):
    help = (
        "Evaluate recommendations offline on the site's interactions (temporal split; baselines "
        "and embrec encoders), or compare text encoders intrinsically with --intrinsic."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "label",
            nargs="?",
            metavar="app_label.Model",
            help="Registered model to evaluate (default: the only one with interactions).",
        )
        parser.add_argument("--k", type=int, default=10, help="Cut-off of the metrics (10).")
        parser.add_argument(
            "--holdout",
            type=int,
            default=10,
            help="Most recent distinct items held out per user (10).",
        )
        parser.add_argument(
            "--min-train",
            type=int,
            default=1,
            help="Users need at least this many training items to be evaluated (1).",
        )
        parser.add_argument(
            "--include-negative",
            action="store_true",
            help="Count every interaction, negative ones too, as consumption (e.g. low star "
            "ratings of watched movies). Default: only positive weights count.",
        )
        parser.add_argument(
            "--kinds", nargs="+", help="Only these interaction kinds (default: all)."
        )
        parser.add_argument(
            "--methods",
            nargs="+",
            help="Baselines (random popularity item-knn als) and encoder aliases, with options "
            "like item2vec:last=3,popularity=0.5 (default: all baselines and each encoder of the "
            "model, plain and tuned).",
        )
        parser.add_argument("--json", metavar="PATH", help="Write the results as JSON.")
        parser.add_argument("--png", metavar="PATH", help="Write a bar chart of the results.")
        parser.add_argument(
            "--intrinsic",
            action="store_true",
            help="Compare the text encoders (GloVe, MiniLM) on WordSim353, SimLex-999, "
            "analogies and the Lee corpus instead.",
        )

    # ------------------------------------------------------------------------------------------

    def handle(self, *args, **options) -> None:
        for name in ("k", "holdout", "min_train"):
            if options[name] < 1:
                flag = "--" + name.replace("_", "-")
                raise CommandError(f"{flag} must be at least 1 (got {options[name]}).")
        if options["intrinsic"]:
            payload = self.run_intrinsic(options)
        else:
            payload = self.run_recommendations(options)
        payload["run"] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} ({platform.machine()}, {platform.system()}, "
            f"Python {platform.python_version()})",
        }
        if options["json"]:
            from embrec.evaluation.report import write_json

            write_json(options["json"], payload)
            self.stdout.write(f"JSON written to {options['json']}")

    def progress_bar(self, total: int, desc: str, verbosity: int):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=verbosity == 0, file=self.stderr._out)

    # ------------------------------------------------------------------------------------------

    def resolve(self, label: str | None):
        if label:
            if label.count(".") != 1:
                raise CommandError(f"{label!r} is not a model label; use app_label.ModelName.")
            try:
                return registry.get(label)
            except NotRegistered as exc:
                raise CommandError(str(exc)) from None
        recs = registry.all()
        if not recs:
            raise CommandError("No model is registered with embrec.")
        if len(recs) > 1:
            from django.contrib.contenttypes.models import ContentType

            from embrec.models import Interaction

            used = set(Interaction.objects.values_list("content_type_id", flat=True).distinct())
            recs = [
                r
                for r in recs
                if ContentType.objects.get_for_model(r.model, for_concrete_model=False).id in used
            ] or recs
        if len(recs) > 1:
            labels = ", ".join(sorted(r.label for r in recs))
            raise CommandError(f"Several registered models have interactions ({labels}); name one.")
        return recs[0]

    def run_recommendations(self, options) -> dict:
        from embrec.evaluation.report import results_chart, results_table
        from embrec.evaluation.runner import evaluate_method
        from embrec.evaluation.site import (
            MethodSpecError,
            build_methods,
            content_vectors,
            default_specs,
            interactions_from_database,
        )
        from embrec.evaluation.split import temporal_split

        rec = self.resolve(options["label"])
        log = interactions_from_database(rec, kinds=options["kinds"])
        if len(log) == 0:
            raise CommandError(
                f"No interactions are recorded for {rec.label}; nothing to evaluate."
            )
        split = temporal_split(
            log,
            holdout=options["holdout"],
            min_train=options["min_train"],
            min_weight=-math.inf if options["include_negative"] else 0.0,
        )
        if len(split.test_users) == 0:
            raise CommandError(
                f"No user of {rec.label} has at least {options['holdout'] + options['min_train']} "
                "distinct items; lower --holdout or --min-train."
            )
        cache: dict = {}

        def content(alias: str):
            if alias not in cache:
                cache[alias] = content_vectors(rec, alias, log.items)
            return cache[alias]

        try:
            methods = build_methods(
                options["methods"] or default_specs(rec), content, k=options["k"]
            )
        except MethodSpecError as exc:
            raise CommandError(str(exc)) from None
        verbosity = options["verbosity"]
        stats = split.stats
        if verbosity:
            self.stdout.write(
                f"{rec.label}: {stats['interactions']} interactions, {stats['users']} users, "
                f"{stats['items']} items; {stats['evaluated_users']} users evaluated on their "
                f"{split.holdout} most recent items ({stats['test_pairs']} held out)."
            )
        results = []
        with self.progress_bar(len(methods), "evaluating", verbosity) as bar:
            for method in methods:
                bar.set_postfix_str(method.name)
                results.append(evaluate_method(method, split, k=options["k"]))
                bar.update(1)
        self.stdout.write(results_table(results))
        if options["png"]:
            results_chart(
                options["png"],
                results,
                title=f"{rec.label}: leave-last-{split.holdout}-out, K={options['k']}",
            )
            self.stdout.write(f"Chart written to {options['png']}")
        return {
            "model": rec.label,
            "protocol": {
                "split": "temporal leave-last-N-out per user",
                "holdout": split.holdout,
                "min_train": options["min_train"],
                "k": options["k"],
                "positives": "all interactions"
                if options["include_negative"]
                else "interactions with positive weight",
                "kinds": options["kinds"] or "all",
            },
            "dataset": stats,
            "results": [r.as_dict() for r in results],
        }

    def run_intrinsic(self, options) -> dict:
        from embrec.evaluation.intrinsic import default_encoders, evaluate_encoder
        from embrec.evaluation.report import bar_chart, format_table

        verbosity = options["verbosity"]
        encoders = default_encoders()
        results = []
        with self.progress_bar(4 * len(encoders), "intrinsic", verbosity) as bar:
            for name, (words, documents) in encoders.items():
                results.append(
                    evaluate_encoder(name, words, documents, progress=lambda _: bar.update(1))
                )
        columns = list(results[0].scores)
        rows = [{"encoder": r.encoder, **r.scores} for r in results]
        self.stdout.write(format_table(rows, ["encoder", *columns]))
        if options["png"]:
            bar_chart(
                options["png"],
                columns,
                {r.encoder: [r.scores[c] for c in columns] for r in results},
                title="Intrinsic comparison of text encoders",
                ylabel="score",
            )
            self.stdout.write(f"Chart written to {options['png']}")
        return {"intrinsic": [r.as_dict() for r in results]}
