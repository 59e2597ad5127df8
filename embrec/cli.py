"""Turn configuration and connection problems into one clear sentence instead of a traceback."""

from __future__ import annotations

import contextlib
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import OperationalError


def describe_operational_error(exc: BaseException) -> str:
    """One sentence saying which PostgreSQL could not be reached, and why."""
    db = settings.DATABASES.get("default", {})
    where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db.get('NAME')}"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"Could not connect to PostgreSQL at {where} ({reason}). Check DATABASE_URL, or unset it "
        "to use the embedded server."
    )


@contextlib.contextmanager
def friendly_errors():
    """Context manager for ``manage.py``: user-fixable errors exit 1 with one line on stderr."""
    try:
        yield
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"embrec: {exc}\n")
        sys.exit(1)
    except OperationalError as exc:
        if "connect" not in str(exc).lower() and "connection" not in str(exc).lower():
            raise
        sys.stderr.write(f"embrec: {describe_operational_error(exc)}\n")
        sys.exit(1)
