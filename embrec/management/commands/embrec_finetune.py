"""``manage.py embrec_finetune ALIAS [--epochs N] [--batch-size N] [--max-pairs N]
[--learning-rate LR] [--max-steps N] [--no-reindex]``: fine-tune a text encoder on the interactions now.

Mines co-consumed item pairs from the ``Interaction`` table, fine-tunes the base model of the
:class:`~embrec.encoders.finetune.FinetunedEncoder` configured under ``ALIAS`` in this process (on
CUDA when this process has it), saves it as a new revision, and queues re-embedding of the
registrations using it when the model changed (the ``embrec.finetune`` Celery task does the same
from a worker). Options override the encoder's configured training parameters for this run.
"""

from __future__ import annotations

import math

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from embrec.encoders import get_encoder
from embrec.encoders.finetune import FinetunedEncoder, validate_params
from embrec.management.commands._common import ProgressBar
from embrec.training import finetune_and_reindex


class Command(BaseCommand):
    help = "Fine-tune a text encoder on co-consumed items and queue re-embedding."

    def add_arguments(self, parser) -> None:
        parser.add_argument("alias", metavar="ALIAS", help="a FinetunedEncoder alias")
        parser.add_argument("--epochs", type=int, help="passes over the pairs")
        parser.add_argument("--batch-size", type=int, help="pairs per training batch")
        parser.add_argument("--max-pairs", type=int, help="most co-consumed pairs to train on")
        parser.add_argument("--learning-rate", type=float, help="AdamW peak learning rate")
        parser.add_argument("--max-steps", type=int, help="stop after this many steps")
        parser.add_argument(
            "--no-reindex", action="store_true", help="Train only; do not queue re-embedding."
        )

    def handle(self, *args, **options) -> None:
        alias = options["alias"]
        try:
            encoder = get_encoder(alias)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if not isinstance(encoder, FinetunedEncoder):
            raise CommandError(
                f"Encoder {alias!r} is not a fine-tuned text encoder "
                "(CLASS embrec.encoders.finetune.FinetunedEncoder)."
            )
        overrides = {
            key: options[option]
            for option, key in (
                ("epochs", "epochs"),
                ("batch_size", "train_batch_size"),
                ("max_pairs", "max_pairs"),
                ("learning_rate", "learning_rate"),
                ("max_steps", "max_steps"),
            )
            if options[option] is not None
        }
        lr = overrides.get("learning_rate")
        if lr is not None and not (math.isfinite(lr) and 0 < lr < 1):
            raise CommandError(f"--learning-rate must be between 0 and 1 (got {lr}).")
        try:
            validate_params({**encoder.params, **overrides})
        except ValueError as exc:
            raise CommandError(
                str(exc).replace("train_batch_size", "--batch-size").replace("_", "-")
            ) from None
        bar: ProgressBar | None = None

        def on_step(step: int, total: int, loss: float) -> None:
            nonlocal bar
            if bar is None:
                bar = ProgressBar(self.stdout, total, f"{alias}: fine-tuning (steps)")
            bar.update(1)

        try:
            summary = finetune_and_reindex(
                alias, overrides, reindex=not options["no_reindex"], on_step=on_step
            )
        except ValueError as exc:
            raise CommandError(f"{alias}: {exc}") from None
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        finally:
            if bar is not None:
                bar.close()
        if not summary["trained"]:
            self.stdout.write(
                f"{alias}: revision {summary['revision']} is current (same pairs and "
                f"parameters); nothing to do."
            )
            return
        self.stdout.write(
            f"{alias}: revision {summary['revision']} (was {summary['previous_revision']}): "
            f"{summary['pairs']} co-consumed pairs of {summary['items']} items from "
            f"{summary['interactions']} interactions, {summary['steps']} steps on "
            f"{summary['device']} in {summary['seconds']:.1f} s "
            f"({summary['pairs_per_second']:.1f} pairs/s); "
            f"{summary['queued']} objects queued for re-embedding."
        )
