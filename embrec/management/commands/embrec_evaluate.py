"""``manage.py embrec_evaluate [app_label.Model] [--protocol ...] [--methods ...] [--json PATH]``.

Offline evaluation on the site's own interactions that cannot flatter: each protocol
(``leave-last`` per-user temporal, ``global-time`` cut-off, ``cold-items``) splits train,
validation and test; every method (baselines: popularity, item-kNN, recent-items kNN, EASE,
implicit ALS; embrec's encoders with the read path's profile and blend) tries at most ``--budget``
configurations on validation, the best is refitted on train + validation and evaluated once on
test (NDCG@K, Recall@K, HitRate@K, coverage), with paired bootstrap intervals against the best
baseline. On the leave-last test split, similar items are measured too (next-item hit rate, hub
share, popularity ratio, ``--coherence-field`` overlap, ``--famous`` lists). ``--json``,
``--png`` and ``--markdown`` write the results. ``--intrinsic`` instead compares the text
encoders (GloVe, MiniLM, and any configured text encoder named with ``--encoders``: a larger
model, a remote embedding service) on word similarity, analogies and document similarity. See
:mod:`embrec.evaluation` and docs/EVALUATION.md.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from datetime import UTC, datetime
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from embrec.encoders.base import EncoderUnavailable
from embrec.evaluation import intrinsic
from embrec.evaluation.baselines import SEARCH_BUDGET
from embrec.evaluation.report import (
    bar_chart,
    format_table,
    markdown_report,
    protocol_table,
    results_chart,
    similar_table,
    write_json,
)
from embrec.evaluation.runner import (
    compare_with_best,
    evaluate_method,
    similar_items_report,
    tune_and_test,
)
from embrec.evaluation.search import default_specs, families
from embrec.evaluation.site import (
    MethodSpecError,
    content_source,
    interactions_from_database,
    item_field_sets,
    item_labels,
)
from embrec.evaluation.split import cold_items_protocol, global_time_protocol, leave_last_protocol
from embrec.exceptions import NotRegistered
from embrec.models import Interaction, content_type_of
from embrec.registry import registry

PROTOCOLS = ("leave-last", "global-time", "cold-items")


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
            "--protocol",
            nargs="+",
            choices=[*PROTOCOLS, "all"],
            help="Protocols to run: leave-last (per-user temporal), global-time (one cut-off "
            "date), cold-items (items with all interactions held out), or all (default: "
            "leave-last).",
        )
        parser.add_argument(
            "--validation",
            type=int,
            help="leave-last: distinct items per user before the test ones used for "
            "validation (default: --holdout).",
        )
        parser.add_argument(
            "--test-share",
            type=float,
            default=0.1,
            help="global-time: latest share of interactions in the test period (0.1).",
        )
        parser.add_argument(
            "--validation-share",
            type=float,
            default=0.1,
            help="global-time: share of interactions before it in the validation period (0.1).",
        )
        parser.add_argument(
            "--cold-share",
            type=float,
            default=0.1,
            help="cold-items: share of items held out for test (as many again for validation).",
        )
        parser.add_argument("--seed", type=int, default=0, help="cold-items: random seed (0).")
        parser.add_argument(
            "--budget",
            type=int,
            default=None,
            help="Most configurations any tuned method tries on validation (24).",
        )
        parser.add_argument(
            "--bootstrap",
            type=int,
            default=2000,
            help="Bootstrap resamples of the paired intervals (2000).",
        )
        parser.add_argument(
            "--coherence-field",
            metavar="FIELD",
            help="Model field whose values (e.g. genres) similar items should share; reports "
            "their mean Jaccard overlap.",
        )
        parser.add_argument(
            "--famous",
            type=int,
            default=5,
            help="Print the similar items of this many most popular items (5; 0: none).",
        )
        parser.add_argument(
            "--no-similar", action="store_true", help="Skip the similar-items measures."
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
            help="Baselines (random popularity item-knn recent-knn ease als) and encoder "
            "aliases. A bare name is tuned on validation; with options (item2vec:last=3,"
            "popularity=0.5, hybrid:deployed=1) it is a fixed configuration (default: the "
            "baselines but random, each encoder of the model tuned, and the serving encoder as "
            "deployed).",
        )
        parser.add_argument("--json", metavar="PATH", help="Write the results as JSON.")
        parser.add_argument("--png", metavar="PATH", help="Write a bar chart of the results.")
        parser.add_argument(
            "--markdown", metavar="PATH", help="Write the result tables as Markdown."
        )
        parser.add_argument(
            "--intrinsic",
            action="store_true",
            help="Compare the text encoders (GloVe, MiniLM) on WordSim353, SimLex-999, "
            "analogies and the Lee corpus instead.",
        )
        parser.add_argument(
            "--encoders",
            nargs="+",
            metavar="ALIAS",
            help="With --intrinsic: also compare these EMBREC['ENCODERS'] aliases (any text "
            "encoder: a larger or fine-tuned model, a remote embedding service) with GloVe and "
            "MiniLM.",
        )

    # ------------------------------------------------------------------------------------------

    def handle(self, *args, **options) -> None:

        if options["budget"] is None:
            options["budget"] = SEARCH_BUDGET
        for name in ("k", "holdout", "min_train", "budget", "bootstrap"):
            if options[name] < 1:
                flag = "--" + name.replace("_", "-")
                raise CommandError(f"{flag} must be at least 1 (got {options[name]}).")
        if options["validation"] is not None and options["validation"] < 1:
            raise CommandError(f"--validation must be at least 1 (got {options['validation']}).")
        if options["famous"] < 0:
            raise CommandError("--famous must not be negative.")
        if options["encoders"] and not options["intrinsic"]:
            raise CommandError(
                "--encoders selects encoders for --intrinsic; recommendation methods are chosen "
                "with --methods."
            )
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
            write_json(options["json"], payload)
            self.stdout.write(f"JSON written to {options['json']}")
        if options.get("markdown") and "protocols" in payload:
            path = Path(options["markdown"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(markdown_report(payload) + "\n")
            self.stdout.write(f"Markdown written to {options['markdown']}")

    def progress_bar(self, total: int, desc: str, verbosity: int):
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
            used = set(Interaction.objects.values_list("content_type_id", flat=True).distinct())
            recs = [r for r in recs if content_type_of(r.model).id in used] or recs
        if len(recs) > 1:
            labels = ", ".join(sorted(r.label for r in recs))
            raise CommandError(f"Several registered models have interactions ({labels}); name one.")
        return recs[0]

    def run_recommendations(self, options) -> dict:

        rec = self.resolve(options["label"])
        log = interactions_from_database(rec, kinds=options["kinds"])
        if len(log) == 0:
            raise CommandError(
                f"No interactions are recorded for {rec.label}; nothing to evaluate."
            )
        protocols = self.build_protocols(log, options, rec.label)
        content = content_source(rec, log.items)
        k = options["k"]
        specs = options["methods"] or default_specs(rec)
        try:
            fams = families(specs, content, k=k, budget=options["budget"])
        except MethodSpecError as exc:
            raise CommandError(str(exc)) from None
        fields = None
        if options["coherence_field"]:
            try:
                fields = item_field_sets(rec, log.items, options["coherence_field"])
            except ValueError as exc:
                raise CommandError(f"--coherence-field: {exc}") from None
        labels = item_labels(rec, log.items) if options["famous"] else None
        verbosity = options["verbosity"]
        payload_protocols = {}
        all_results = {}
        total = sum(len(f.configs) + 1 for f in fams) * len(protocols)
        with self.progress_bar(total, "evaluating", verbosity) as bar:
            for protocol in protocols:
                results = []
                for family in fams:
                    bar.set_postfix_str(f"{protocol.name}: {family.name}")
                    results.append(self.tune(family, protocol, k, bar))
                payload_protocols[protocol.name] = self.protocol_payload(
                    protocol, results, k, options, fields, labels
                )
                all_results[protocol.name] = results
        for protocol in protocols:
            data = payload_protocols[protocol.name]
            stats = protocol.test.stats
            self.stdout.write(
                f"\n{protocol.name} — {protocol.description}\n"
                f"test: {stats['evaluated_users']} users, {stats['test_pairs']} held-out pairs; "
                f"validation: {protocol.validation.stats['evaluated_users']} users"
                + (
                    f"; {stats['users_without_history']} users with no training history "
                    "not evaluated"
                    if "users_without_history" in stats
                    else ""
                )
            )
            self.stdout.write(protocol_table(data, k))
            similar = data.get("similar")
            if similar:
                self.stdout.write(similar_table(similar, k))
                self.write_famous(similar)
        if options["png"]:
            results_chart(options["png"], all_results, metric=f"ndcg@{k}", title=rec.label)
            self.stdout.write(f"Chart written to {options['png']}")
        return {
            "model": rec.label,
            "k": k,
            "budget": options["budget"],
            "selection": f"ndcg@{k} on validation; the chosen configuration is refitted on "
            "training + validation and evaluated once on test",
            "positives": "all interactions"
            if options["include_negative"]
            else "interactions with positive weight",
            "kinds": options["kinds"] or "all",
            "protocols": payload_protocols,
        }

    def build_protocols(self, log, options, label):

        min_weight = -math.inf if options["include_negative"] else 0.0
        chosen = options["protocol"] or ["leave-last"]
        if "all" in chosen:
            chosen = list(PROTOCOLS)
        out = []
        for name in dict.fromkeys(chosen):
            try:
                if name == "leave-last":
                    protocol = leave_last_protocol(
                        log,
                        holdout=options["holdout"],
                        validation=options["validation"],
                        min_train=options["min_train"],
                        min_weight=min_weight,
                    )
                elif name == "global-time":
                    protocol = global_time_protocol(
                        log,
                        test_share=options["test_share"],
                        validation_share=options["validation_share"],
                        min_train=options["min_train"],
                        min_weight=min_weight,
                    )
                else:
                    protocol = cold_items_protocol(
                        log,
                        share=options["cold_share"],
                        seed=options["seed"],
                        min_train=options["min_train"],
                        min_weight=min_weight,
                    )
            except ValueError as exc:
                raise CommandError(f"{name}: {exc}") from None
            if name == "leave-last" and len(protocol.test.test_users) == 0:
                need = options["holdout"] + (options["validation"] or options["holdout"])
                raise CommandError(
                    f"No user of {label} has at least {need + options['min_train']} distinct "
                    "items; lower --holdout, --validation or --min-train."
                )
            if len(protocol.test.test_users) == 0 or len(protocol.validation.test_users) == 0:
                raise CommandError(f"{name}: no user to evaluate in validation or test.")
            out.append(protocol)
        return out

    def tune(self, family, protocol, k, bar):

        original = family.make

        def counted(params):
            bar.update(1)
            return original(params)

        family.make = counted
        try:
            return tune_and_test(family, protocol.validation, protocol.test, k=k)
        finally:
            family.make = original

    def protocol_payload(self, protocol, results, k, options, fields, labels) -> dict:

        metric = f"ndcg@{k}"
        data = {
            "description": protocol.description,
            "stats": protocol.stats,
            "results": [r.as_dict(metric) for r in results],
            "intervals": compare_with_best(results, metric, samples=options["bootstrap"]),
            # The same against each baseline in turn (targets name particular baselines).
            "intervals_by_baseline": {
                r.name: compare_with_best(
                    results, metric, against=[r.name], samples=options["bootstrap"]
                ).get("methods", {})
                for r in results
                if r.baseline
            },
        }
        if protocol.test.candidates is not None:
            # Cold items among the whole catalog: are they recommended at all?
            whole = dataclasses.replace(protocol.test, candidates=None)
            for r, row in zip(results, data["results"], strict=True):
                row["whole_catalog"] = evaluate_method(r.method, whole, k=k, fit=False).metrics
        if protocol.name == "leave-last" and not options["no_similar"]:
            similar = {}
            for r in results:
                report = similar_items_report(
                    r.method,
                    protocol.test,
                    k=k,
                    fields=fields,
                    famous=options["famous"],
                    labels=labels,
                )
                if report:
                    similar[r.name] = report
            data["similar"] = similar
        return data

    def write_famous(self, similar: dict) -> None:
        for name, report in similar.items():
            famous = report.get("famous")
            if not famous:
                continue
            self.stdout.write(f"\nSimilar items of the most popular items — {name}:")
            for source, items in famous.items():
                self.stdout.write(f"  {source}: " + "; ".join(items[:5]))

    def run_intrinsic(self, options) -> dict:

        verbosity = options["verbosity"]
        encoders = intrinsic.default_encoders()
        for alias in options["encoders"] or []:
            try:
                encoders[alias] = intrinsic.configured_encoder(alias)
            except (ImproperlyConfigured, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        results = []
        with self.progress_bar(4 * len(encoders), "intrinsic", verbosity) as bar:
            for name, (words, documents) in encoders.items():
                try:
                    results.append(
                        intrinsic.evaluate_encoder(
                            name, words, documents, progress=lambda _: bar.update(1)
                        )
                    )
                except EncoderUnavailable as exc:
                    raise CommandError(f"{name}: {exc}") from exc
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
