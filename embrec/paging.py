"""Keyset pagination for the write path's long scans (reindexing, user-vector rebuilds)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db import models


def keyset_pages(queryset: models.QuerySet, field: str, size: int) -> Iterator[list[Any]]:
    """The values of ``field`` over ``queryset``, ascending, in lists of at most ``size``.

    Pages are read by keyset (``field > last value``), never by offset: each page is one range
    scan of an index on ``field``, however deep it is, and rows added behind the scan are not read
    twice. ``queryset`` may be ``distinct()``.
    """
    values = queryset.order_by(field).values_list(field, flat=True)
    last = None
    while True:
        page = values.filter(**{f"{field}__gt": last}) if last is not None else values
        chunk = list(page[:size])
        if not chunk:
            return
        yield chunk
        last = chunk[-1]
