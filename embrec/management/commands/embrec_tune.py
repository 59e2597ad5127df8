"""``manage.py embrec_tune [app_label.Model] [--output PATH] [--grid JSON] ...``.

Chooses the read path's settings on the site's own interactions, honestly: a per-user temporal
split (each user's ``--holdout`` latest distinct items are the test part, the ``--validation``
before them the validation part); every configuration of the serving encoder (the registration's
first) is scored on validation, the best by NDCG@K is refitted on training + validation and read
once on test, next to the baselines tuned the same way. The chosen settings
(``USER_VECTOR_MAX_INTERACTIONS``, ``USER_VECTOR_WEIGHTING``, ``RECOMMEND_POPULARITY``,
``RERANK_POOL_FACTOR``, ``RERANK_POPULAR_CANDIDATES``; a hybrid's part weights as advice) are
written to ``EMBREC["TUNED_CONFIG"]`` (or ``--output``), the evaluation report beside it
(``<name>.report.json``). The read path uses them wherever ``settings.EMBREC`` does not set them.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import CommandError

from embrec import tuning
from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.encoders.hybrid import HybridEncoder
from embrec.evaluation.report import protocol_table, write_json
from embrec.evaluation.search import DEFAULT_BASELINES, embrec_family, families
from embrec.evaluation.site import MethodSpecError, content_source, interactions_from_database
from embrec.management.commands.embrec_evaluate import Command as EvaluateCommand

#: What ``embrec_tune`` searches by default (sampled down to ``--budget``).
TUNE_GRID: dict[str, list] = {
    "last": [1, 2, 3, 5, 10, 20],
    "popularity": [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8],
    "uniform": [True, False],
    "popular_pool": [0, 100, 200, 500],
}


class Command(EvaluateCommand):
    help = (
        "Tune the read path's profile, blend and pool settings on a validation split of the "
        "site's interactions and write them to EMBREC['TUNED_CONFIG']."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "label",
            nargs="?",
            metavar="app_label.Model",
            help="Registered model to tune on (default: the only one with interactions).",
        )
        parser.add_argument("--k", type=int, default=10, help="Cut-off of NDCG@K (10).")
        parser.add_argument("--holdout", type=int, default=10, help="Test items per user (10).")
        parser.add_argument(
            "--validation", type=int, help="Validation items per user (default: --holdout)."
        )
        parser.add_argument("--min-train", type=int, default=1)
        parser.add_argument(
            "--budget", type=int, default=48, help="Configurations tried on validation (48)."
        )
        parser.add_argument(
            "--grid",
            help='JSON object replacing the search grid, e.g. \'{"last": [3], '
            '"popularity": [0.4, 0.6]}\' (keys: last, popularity, uniform, half_life, '
            "pool_factor, popular_pool, weights).",
        )
        parser.add_argument(
            "--baselines",
            nargs="*",
            default=None,
            help="Baselines tuned for the report (default: popularity item-knn recent-knn ease "
            "als; none with an empty list).",
        )
        parser.add_argument("--include-negative", action="store_true")
        parser.add_argument("--kinds", nargs="+")
        parser.add_argument("--bootstrap", type=int, default=2000)
        parser.add_argument(
            "--output", help="Where to write the configuration (default: EMBREC['TUNED_CONFIG'])."
        )

    def handle(self, *args, **options) -> None:

        for name in ("k", "holdout", "min_train", "budget", "bootstrap"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        output = options["output"] or embrec_settings.TUNED_CONFIG
        if not output:
            raise CommandError(
                "Set EMBREC['TUNED_CONFIG'] (e.g. BASE_DIR / '.embrec' / 'tuned.json') or pass "
                "--output."
            )
        grid = TUNE_GRID
        if options["grid"]:
            try:
                grid = json.loads(options["grid"])
            except ValueError as exc:
                raise CommandError(f"--grid is not JSON: {exc}") from None
            allowed = {"last", "popularity", "uniform", "half_life", "pool_factor"}
            allowed |= {"popular_pool", "weights"}
            if (
                not isinstance(grid, dict)
                or set(grid) - allowed
                or not all(isinstance(v, list) and v for v in grid.values())
            ):
                raise CommandError(
                    f"--grid must map some of {', '.join(sorted(allowed))} to non-empty lists."
                )
        rec = self.resolve(options["label"])
        encoders = rec.get_encoders()
        alias = encoders[0]
        log = interactions_from_database(rec, kinds=options["kinds"])
        if len(log) == 0:
            raise CommandError(f"No interactions are recorded for {rec.label}; nothing to tune.")
        options.update(
            protocol=["leave-last"],
            include_negative=options["include_negative"],
            no_similar=True,
            famous=0,
        )
        (protocol,) = self.build_protocols(log, options, rec.label)
        content = content_source(rec, log.items)

        k = options["k"]
        baselines = DEFAULT_BASELINES if options["baselines"] is None else options["baselines"]
        try:
            fams = families(baselines, content, k=k) if baselines else []
            served = embrec_family(alias, content, k=k, budget=options["budget"], grid=grid)
        except MethodSpecError as exc:
            raise CommandError(str(exc)) from None
        fams.append(served)
        results = []
        total = sum(len(f.configs) + 1 for f in fams)
        with self.progress_bar(total, "tuning", options["verbosity"]) as bar:
            for family in fams:
                bar.set_postfix_str(family.name)
                results.append(self.tune(family, protocol, k, bar))
        tuned = results[-1]
        data = self.protocol_payload(protocol, results, k, options, None, None)
        self.stdout.write(protocol_table(data, k))

        chosen = tuned.chosen
        method = tuned.method
        values = {
            "USER_VECTOR_MAX_INTERACTIONS": int(method.last or 1000),
            "USER_VECTOR_WEIGHTING": "uniform" if method.uniform else "weighted",
            "RECOMMEND_POPULARITY": float(method.popularity),
            "RERANK_POOL_FACTOR": max(1, int(round((method.pool or k) / k))),
            "RERANK_POPULAR_CANDIDATES": int(method.popular_pool),
        }
        if "half_life" in chosen:
            values["USER_VECTOR_HALF_LIFE_DAYS"] = chosen["half_life"]
        metric = f"ndcg@{k}"
        config = {
            "model": rec.label,
            "encoder": alias,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "settings": values,
            "chosen": chosen,
            "validation": {metric: max(score for _, score in tuned.validation)},
            "test": tuned.test.metrics,
            "report": None,
        }
        if "weights" in chosen:
            hybrid = get_encoder(alias)
            assert isinstance(hybrid, HybridEncoder)  # weights are searched for hybrids only
            parts = [name for name, _ in hybrid.parts]
            config["encoder_parts"] = {
                alias: [
                    {"encoder": name, "weight": float(w)}
                    for name, w in zip(parts, chosen["weights"], strict=True)
                ]
            }
        path = Path(output)
        report_path = path.with_name(path.stem + ".report.json")
        config["report"] = report_path.name
        write_json(
            report_path,
            {
                "model": rec.label,
                "k": k,
                "selection": f"{metric} on validation; the chosen configuration is refitted on "
                "training + validation and evaluated once on test",
                "positives": "all interactions"
                if options["include_negative"]
                else "interactions with positive weight",
                "protocols": {protocol.name: data},
            },
        )
        tuning.write(path, config)
        embrec_settings.reload()
        explicit = sorted(set(values) & set(embrec_settings.user_settings))
        self.stdout.write(f"Tuned configuration written to {path} (report: {report_path.name})")
        for name, value in values.items():
            note = "  (overridden by settings.EMBREC)" if name in explicit else ""
            self.stdout.write(f"  {name} = {value!r}{note}")
        if "encoder_parts" in config:
            self.stdout.write(
                f"  {alias} part weights {config['encoder_parts'][alias]}: copy them into "
                "EMBREC['ENCODERS'] and reindex to apply them."
            )
        ref = data["intervals"].get("methods", {}).get(tuned.name)
        if ref and not math.isnan(ref["ratio"]):
            self.stdout.write(
                f"Test {metric}: {tuned.test.metrics[metric]:.4f}, "
                f"{ref['ratio']:.3f}x {data['intervals']['reference']} "
                f"[{ref['ratio_low']:.3f}, {ref['ratio_high']:.3f}]"
            )
