"""``manage.py embrec_fit_reduction [ALIAS ...] [--no-reindex]``: refit fitted reduced encoders.

Fits each named :class:`~embrec.encoders.reduced.ReducedEncoder` with ``"method": "pca"`` or
``"rotate"`` (default: every configured one) on the vectors stored now; when the fit changed (a new revision,
hence a new encoder identity), queues re-embedding of the registrations that use the alias (or an
encoder built on it).
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from embrec import indexing
from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.encoders.reduced import ReducedEncoder
from embrec.encoders.trained import dependent_aliases, registrations_using

#: The methods of a reduced encoder that are fitted on the site's vectors.
FITTED = ("pca", "rotate")


def pca_aliases() -> list[str]:
    """Configured aliases of fitted reduced encoders (PCA or rotation)."""
    names = []
    for name, config in embrec_settings.ENCODERS.items():
        try:
            cls = import_string(config["CLASS"])
        except (ImportError, KeyError, TypeError):
            continue
        options = config.get("OPTIONS") or {}
        if isinstance(cls, type) and issubclass(cls, ReducedEncoder):
            if options.get("method", "pca") in FITTED:
                names.append(name)
    return names


class Command(BaseCommand):
    help = "Refit PCA or rotation encoders on the stored vectors and queue re-embedding."

    def add_arguments(self, parser) -> None:
        parser.add_argument("aliases", nargs="*", metavar="ALIAS")
        parser.add_argument(
            "--no-reindex", action="store_true", help="Fit only; do not queue re-embedding."
        )

    def handle(self, *args: str, **options) -> None:
        names = list(options["aliases"] or args) or pca_aliases()
        if not names:
            raise CommandError(
                "No reduced encoder with method 'pca' or 'rotate' is configured in "
                "EMBREC['ENCODERS']."
            )
        for name in names:
            try:
                encoder = get_encoder(name)
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
            if not isinstance(encoder, ReducedEncoder) or encoder.method not in FITTED:
                raise CommandError(
                    f"Encoder {name!r} is not a reduced encoder with method 'pca' or 'rotate'."
                )
            try:
                summary = encoder.refit()
            except (ImproperlyConfigured, ValueError) as exc:
                raise CommandError(f"{name}: {exc}") from None
            queued = 0
            if summary["changed"] and not options["no_reindex"]:
                aliases = dependent_aliases(name)
                for rec in registrations_using(name):
                    for alias in rec.get_encoders():
                        if alias in aliases:
                            queued += indexing.reindex(rec, encoder=alias)
            self.stdout.write(
                f"{name}: revision {summary['revision']} "
                f"({'new' if summary['changed'] else 'unchanged'}; {summary['vectors']} "
                f"{summary['source']} vectors, {100 * summary['explained_variance']:.1f}% of the "
                f"{'energy in the leading quarter' if encoder.method == 'rotate' else 'variance kept'}"
                f"); {queued} objects queued for re-embedding."
            )
