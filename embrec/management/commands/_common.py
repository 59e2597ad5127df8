"""Helpers shared by the embrec management commands (not a command: the name starts with ``_``)."""

from __future__ import annotations

import sys
import time

from django.core.management.base import CommandError, OutputWrapper

from embrec.exceptions import NotRegistered
from embrec.items import Recommendable
from embrec.registry import registry


def resolve_labels(labels: list[str]) -> list[Recommendable]:
    """Registrations for ``app_label.Model`` labels (all registrations when none are given)."""
    if not labels:
        recs = sorted(registry.all(), key=lambda rec: rec.label)
        if not recs:
            raise CommandError("No model is registered with embrec.")
        return recs
    recs = []
    for label in labels:
        if label.count(".") != 1:
            raise CommandError(f"{label!r} is not a model label; use app_label.ModelName.")
        try:
            rec = registry.get(label)
        except NotRegistered as exc:
            raise CommandError(str(exc)) from None
        if rec not in recs:
            recs.append(rec)
    return recs


def resolve_encoder(recs: list[Recommendable], encoder: str | None) -> None:
    """Fail unless every one of ``recs`` uses ``encoder`` (when one is given)."""
    if encoder is None:
        return
    missing = [rec.label for rec in recs if encoder not in rec.get_encoders()]
    if missing:
        raise CommandError(f"Encoder {encoder!r} is not used by: {', '.join(missing)}.")


def positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise CommandError(f"{option} must be at least 1 (got {value}).")


class ProgressBar:
    """A one-line text progress bar, redrawn in place on a terminal.

    Off a terminal (logs, ``call_command``) it prints one line at 0 % and then every 10 %, so
    logs stay readable.
    """

    def __init__(self, out: OutputWrapper, total: int, label: str, width: int = 30):
        self.out = out
        self.total = max(int(total), 0)
        self.label = label
        self.width = width
        self.done = 0
        self.started = time.monotonic()
        self.tty = bool(getattr(out, "isatty", lambda: False)()) and out._out is sys.stdout
        self._last_step = -1
        self.update(0)

    def update(self, amount: int) -> None:
        self.done += amount
        total = max(self.total, self.done, 1)
        fraction = self.done / total
        step = int(fraction * 10)
        if not self.tty and step == self._last_step:
            return
        self._last_step = step
        filled = int(fraction * self.width)
        rate = self.done / max(time.monotonic() - self.started, 1e-6)
        line = (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{self.done}/{max(self.total, self.done)} {fraction:4.0%} {rate:,.0f}/s"
        )
        if self.tty:
            self.out.write("\r" + line, ending="")
            self.out.flush()
        else:
            self.out.write(line)

    def close(self) -> None:
        if self.tty:
            self.out.write("")
