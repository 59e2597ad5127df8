"""Migration operation that installs pgvector with a clear error when it is not available."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.db.migrations.operations.base import Operation

MISSING_PGVECTOR = (
    "The PostgreSQL server at {where} does not have the pgvector extension installed, and embrec "
    "stores vectors with it: install pgvector on that server (e.g. apt install "
    "postgresql-{major}-pgvector) and run migrate again, or unset DATABASE_URL to use the "
    "embedded PostgreSQL, which includes it."
)


def pgvector_status(connection) -> tuple[bool, bool]:
    """Return ``(available, installed)`` for the vector extension on ``connection``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name, installed_version FROM pg_available_extensions WHERE name = 'vector'"
        )
        row = cursor.fetchone()
    if row is None:
        return False, False
    return True, row[1] is not None


def missing_pgvector_message(connection) -> str:
    settings = connection.settings_dict
    where = f"{settings.get('HOST') or 'localhost'}:{settings.get('PORT') or 5432}"
    major = connection.pg_version // 10000 if connection.pg_version else "NN"
    return MISSING_PGVECTOR.format(where=where, major=major)


class CreateVectorExtension(Operation):
    """``CREATE EXTENSION IF NOT EXISTS vector``, failing with a sentence a user can act on."""

    reversible = True

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        connection = schema_editor.connection
        if connection.vendor != "postgresql":
            raise ImproperlyConfigured("embrec needs PostgreSQL with pgvector.")
        available, installed = pgvector_status(connection)
        if installed:
            return
        if not available:
            raise ImproperlyConfigured(missing_pgvector_message(connection))
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        # The extension may be used by other apps; leave it in place.
        pass

    def describe(self):
        return "Creates the pgvector extension"
