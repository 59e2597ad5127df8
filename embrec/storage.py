"""Low-level vector storage: bulk writes and per-(model, encoder) HNSW indexes.

All vectors live in ``embrec_embedding.vector`` (a dimension-less pgvector column). Each
(content type, encoder, dimensions) gets a partial expression index::

    CREATE INDEX ... USING hnsw ((vector::vector(384)) vector_cosine_ops)
        WHERE content_type_id = 7 AND encoder = 'default' AND dimensions = 384

Queries use the same expression and predicate (:func:`distance_sql`) so the planner picks that
index. The dimensions are part of the predicate so that switching an alias to a model with
other dimensions never breaks the old index: old rows stay in it until they are re-encoded.

What the index stores is an encoder option (:func:`index_options`), ``"index"`` in its
``OPTIONS``:

* ``"vector"`` (default) — the full single-precision vectors (4 bytes per dimension);
* ``"halfvec"`` (or the older ``"halfvec": True``) — half-precision vectors, ``(vector::halfvec(384))
  halfvec_cosine_ops``: half the size, recall unchanged in practice for normalised embeddings;
* ``"bit"`` — binary-quantised vectors, one bit per dimension (``binary_quantize(vector::
  vector(384))::bit(384)`` with ``bit_hamming_ops``): the index search returns the ``"rerank"``
  nearest rows by Hamming distance (default :data:`DEFAULT_RERANK`), which are then re-ranked by
  the exact cosine distance of their full vectors, read from the table (see
  :func:`ann_sql`). The table keeps the full vectors either way; only the index shrinks.

``"index_dimensions": k`` (with ``"vector"`` or ``"halfvec"``) indexes only the first ``k``
dimensions, ``(subvector(vector::vector(384), 1, k)::halfvec(k)) halfvec_cosine_ops``, and
re-ranks the ``"rerank"`` nearest rows by the full vectors like a ``bit`` index. It suits vectors
whose leading dimensions carry most of the information: Matryoshka models, and any model's
vectors rotated onto their principal axes (:class:`embrec.encoders.reduced.ReducedEncoder`,
``"method": "rotate"``), which keeps every cosine.

A spec may name an encoder identity (:class:`~embrec.models.EncoderVersion`): its predicate then
adds ``AND identity = '…'``, so the live and a pending version of one alias, even with the same
dimensions, have separate graphs and a query reads exactly one version. An index built before
versions existed (no identity in its predicate, :attr:`IndexSpec.legacy_name`) still serves
queries of any identity with its dimensions, by predicate implication, until the version it was
built for is pruned.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db import connection as default_connection
from pgvector.psycopg import register_vector
from psycopg.copy import QueuedLibpqWriter

from embrec.conf import embrec_settings

logger = logging.getLogger(__name__)

_known_indexes: set[tuple[str, str]] = set()
_lock = threading.Lock()


#: What an index may store: full vectors, half-precision vectors, or one bit per dimension.
INDEX_KINDS = ("vector", "halfvec", "bit")
#: Rows a ``bit`` index search returns for re-ranking by the full vectors. Recall depends on the
#: data: measure it on yours (``benchmarks/bench_quantize.py``, docs/BENCHMARKS.md (g)).
DEFAULT_RERANK = 200
#: Most rows one re-ranked search may read (``hnsw.ef_search`` is capped at 1,000 too).
MAX_RERANK = 1000
#: Fewest leading dimensions an ``"index_dimensions"`` index may keep.
MIN_INDEX_DIMENSIONS = 8


def index_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``{"halfvec": bool, "binary": bool, "prefix": int | None, "rerank": int}`` from an
    encoder's ``OPTIONS``.

    Raises ``ImproperlyConfigured`` with one sentence for a bad value (checked by
    ``manage.py check`` too).
    """
    kind = options.get("index")
    legacy_half = options.get("halfvec")
    if legacy_half not in (None, True, False):
        raise ImproperlyConfigured(f"'halfvec' must be True or False, got {legacy_half!r}.")
    if kind is None:
        kind = "halfvec" if legacy_half else "vector"
    if kind not in INDEX_KINDS:
        raise ImproperlyConfigured(
            f"'index' must be one of {', '.join(map(repr, INDEX_KINDS))}, got {kind!r}."
        )
    if legacy_half and kind != "halfvec":
        raise ImproperlyConfigured(f"'halfvec': True contradicts 'index': {kind!r}; keep one.")
    rerank = options.get("rerank", DEFAULT_RERANK)
    if isinstance(rerank, bool) or not isinstance(rerank, int) or not 1 <= rerank <= MAX_RERANK:
        raise ImproperlyConfigured(
            f"'rerank' must be a whole number of rows from 1 to {MAX_RERANK}, got {rerank!r}."
        )
    prefix = options.get("index_dimensions")
    if prefix is not None and (
        isinstance(prefix, bool) or not isinstance(prefix, int) or prefix < MIN_INDEX_DIMENSIONS
    ):
        raise ImproperlyConfigured(
            f"'index_dimensions' must be a whole number of at least {MIN_INDEX_DIMENSIONS}, "
            f"got {prefix!r}."
        )
    if prefix is not None and kind == "bit":
        raise ImproperlyConfigured(
            "'index_dimensions' applies to 'index': 'vector' or 'halfvec', not 'bit'."
        )
    if "rerank" in options and kind != "bit" and prefix is None:
        raise ImproperlyConfigured("'rerank' applies to 'index': 'bit' or 'index_dimensions' only.")
    return {
        "halfvec": kind == "halfvec",
        "binary": kind == "bit",
        "prefix": prefix,
        "rerank": int(rerank),
    }


@dataclass(frozen=True)
class IndexSpec:
    """One partial HNSW index: a model's vectors under one encoder alias, dimensions and,
    when ``identity`` is set, one encoder identity (version).

    ``halfvec``, ``binary`` and ``prefix`` (the leading dimensions indexed) say what the index
    stores (see the module docstring); ``rerank`` (:attr:`reranked` indexes only, not part of the
    index's identity) is how many rows the index search returns for re-ranking by the full
    vectors. A ``prefix`` of at least ``dimensions`` indexes the whole vector.
    """

    content_type_id: int
    encoder: str
    dimensions: int
    halfvec: bool = False
    binary: bool = False
    rerank: int = field(default=DEFAULT_RERANK, compare=False)
    identity: str | None = None
    prefix: int | None = None

    def __post_init__(self) -> None:
        if self.prefix is not None and self.prefix >= self.dimensions:
            object.__setattr__(self, "prefix", None)

    @classmethod
    def for_encoder(
        cls,
        content_type_id: int,
        alias: str,
        dimensions: int,
        options: Mapping[str, Any],
        identity: str | None = None,
    ) -> IndexSpec:
        """The spec of ``alias``'s vectors of ``dimensions`` (of one ``identity``, when given),
        its index kind from the encoder's ``options``."""
        return cls(
            int(content_type_id),
            alias,
            int(dimensions),
            **index_options(options),
            identity=identity,
        )

    @property
    def kind(self) -> str:
        return "bit" if self.binary else "halfvec" if self.halfvec else "vector"

    @property
    def reranked(self) -> bool:
        """Whether the index holds less than the vectors (one bit per dimension, or the leading
        dimensions): its search returns :attr:`rerank` rows, re-ranked by the full vectors."""
        return self.binary or self.prefix is not None

    @property
    def vector_type(self) -> str:
        """The type distances are computed in (full vectors for a :attr:`reranked` index)."""
        half = self.halfvec and not self.reranked
        return f"{'halfvec' if half else 'vector'}({int(self.dimensions)})"

    @property
    def index_type(self) -> str:
        """The type of the indexed vectors (``bit`` excepted)."""
        dims = int(self.prefix or self.dimensions)
        return f"{'halfvec' if self.halfvec else 'vector'}({dims})"

    @property
    def opclass(self) -> str:
        if self.binary:
            return "bit_hamming_ops"
        return "halfvec_cosine_ops" if self.halfvec else "vector_cosine_ops"

    def index_expression(self, alias: str = "") -> str:
        """The indexed expression (queries must repeat it exactly for the index to serve them)."""
        return self._indexed(f"{alias}.vector" if alias else "vector")

    def _indexed(self, vector: str) -> str:
        """What the index stores of ``vector`` (an SQL expression of a stored or query vector)."""
        dims = int(self.dimensions)
        if self.binary:
            return f"(binary_quantize(({vector})::vector({dims}))::bit({dims}))"
        if self.prefix is not None:
            return (
                f"(subvector(({vector})::vector({dims}), 1, {int(self.prefix)})::{self.index_type})"
            )
        return f"(({vector})::{self.index_type})"

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.encoder.lower())[:20]
        key = f"{self.encoder}/bit/dims" if self.binary else f"{self.encoder}/{self.halfvec}/dims"
        if self.prefix is not None:
            key += f"/prefix{int(self.prefix)}"
        if self.identity is not None:
            key += f"/{self.identity}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:6]
        kind = "b" if self.binary else "h" if self.halfvec else "v"
        if self.prefix is not None:
            kind += f"p{int(self.prefix)}"
        return f"embrec_hnsw_{self.content_type_id}_{slug}_{self.dimensions}{kind}_{digest}"

    @property
    def legacy_name(self) -> str:
        """The name of the index of these vectors built without an identity in its predicate."""
        return replace(self, identity=None).name

    def predicate_sql(self, alias: str = "") -> str:
        prefix = f"{alias}." if alias else ""
        encoder = self.encoder.replace("'", "''")
        sql = (
            f"{prefix}content_type_id = {int(self.content_type_id)} AND {prefix}encoder = "
            f"'{encoder}' AND {prefix}dimensions = {int(self.dimensions)}"
        )
        if self.identity is not None:
            identity = self.identity.replace("'", "''")
            sql += f" AND {prefix}identity = '{identity}'"
        return sql

    def distance_sql(self, alias: str = "") -> str:
        """``vector::type <=> %s::type``: cosine distance to one bound query vector.

        For a :attr:`reranked` index this is the exact distance of the full vectors (the
        re-ranking order), which the index does not serve; :meth:`search_sql` is the order it
        serves.
        """
        prefix = f"{alias}." if alias else ""
        return f"({prefix}vector::{self.vector_type}) <=> %s::{self.vector_type}"

    def search_sql(self, alias: str = "", query: str = "%s") -> str:
        """The ``ORDER BY`` expression the HNSW index serves, to ``query`` (an SQL expression of
        the query vector; default one bound parameter)."""
        operator = "<~>" if self.binary else "<=>"
        return f"{self.index_expression(alias)} {operator} {self._indexed(query)}"


def ann_sql(
    spec: IndexSpec,
    columns: str,
    where: str,
    where_params: Sequence[Any],
    vector: Sequence[float] | np.ndarray,
    limit: int,
    *,
    alias: str = "e",
) -> tuple[str, list]:
    """An ANN query over ``embrec_embedding {alias}`` that the HNSW index of ``spec`` serves.

    ``columns`` may use ``{distance}`` (the cosine distance to ``vector``, selected as
    ``distance``); rows come ordered by it, at most ``limit``. For a :attr:`~IndexSpec.reranked`
    index the index search returns ``max(spec.rerank, limit)`` rows (by Hamming distance, or by
    the cosine of the leading dimensions) in a sub-select, and the outer query re-ranks them by
    the full vectors' cosine distance. ``where`` (with
    ``where_params``) filters rows inside the index scan either way. Run it with
    ``hnsw.ef_search`` at least :func:`scan_size`.
    """
    literal = vector_literal(vector)
    select = columns.format(distance=spec.distance_sql(alias))
    if not spec.reranked:
        sql = (
            f"SELECT {select} FROM embrec_embedding {alias} WHERE {where} "
            f"ORDER BY distance LIMIT %s"
        )
        return sql, [literal, *where_params, int(limit)]
    sql = (
        f"SELECT * FROM (SELECT {select} FROM embrec_embedding {alias} WHERE {where} "
        f"ORDER BY {spec.search_sql(alias)} LIMIT %s) candidates ORDER BY distance LIMIT %s"
    )
    return sql, [literal, *where_params, literal, scan_size(spec, limit), int(limit)]


def scan_size(spec: IndexSpec, limit: int) -> int:
    """Rows the index search of :func:`ann_sql` must return (``hnsw.ef_search`` at least)."""
    return max(int(spec.rerank), int(limit)) if spec.reranked else int(limit)


def vector_literal(vector: Sequence[float] | np.ndarray) -> str:
    """pgvector's text form, ``[0.1,0.2,…]`` (for bound parameters)."""
    return "[" + ",".join(repr(float(x)) for x in np.asarray(vector, dtype=np.float32)) + "]"


def parse_vector(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.astype(np.float32, copy=False)
    if hasattr(value, "to_numpy"):
        return value.to_numpy().astype(np.float32, copy=False)
    if isinstance(value, str):
        return np.array([float(x) for x in value.strip("[]").split(",")], dtype=np.float32)
    return np.asarray(value, dtype=np.float32)


def _create_index_sql(spec: IndexSpec) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {spec.name} ON embrec_embedding "
        f"USING hnsw ({spec.index_expression()} {spec.opclass}) "
        f"WITH (m = {int(embrec_settings.HNSW_M)}, "
        f"ef_construction = {int(embrec_settings.HNSW_EF_CONSTRUCTION)}) "
        f"WHERE {spec.predicate_sql()}"
    )


def _index_names(spec: IndexSpec, exact: bool) -> list[str]:
    """Names that serve ``spec``: its own, and unless ``exact`` the legacy one (no identity)."""
    if exact or spec.identity is None:
        return [spec.name]
    return [spec.name, spec.legacy_name]


def _relation_exists(cursor, spec: IndexSpec) -> bool:
    cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [spec.name])
    return cursor.fetchone() is not None


def _lock_index(cursor, spec: IndexSpec) -> bool:
    """Serialise DDL on ``spec``'s index (a transaction-scoped advisory lock on its name: two
    workers never build or drop one index at once); returns whether the index exists now."""
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [spec.name])
    return _relation_exists(cursor, spec)


def _create_index(cursor, spec: IndexSpec) -> None:
    # CREATE INDEX refuses to run while deferred foreign-key checks of earlier writes in this
    # transaction are queued on the table: run those checks now.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(_create_index_sql(spec))
    cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def _remember_after_commit(conn, key: tuple[str, str]) -> None:
    # A rolled-back transaction takes the index with it: only remember it once committed.
    transaction.on_commit(lambda: _known_indexes.add(key), using=conn.alias)


def index_exists(spec: IndexSpec, using=None, *, exact: bool = False) -> bool:
    """Whether an HNSW index serving ``spec`` exists, asked of the database (not the cache).

    Unless ``exact``, an index built before versions existed (:attr:`IndexSpec.legacy_name`)
    serves a spec with an identity. Another process may have dropped it
    (``embrec_reindex --rebuild-index``): a missing index is also forgotten by this process's
    cache, so that :func:`ensure_index` creates it again.
    """
    conn = using or default_connection
    key = (conn.alias, spec.name)
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_class WHERE relname = ANY(%s) AND relkind = 'i'",
            [_index_names(spec, exact)],
        )
        exists = cursor.fetchone() is not None
    if exists:
        _known_indexes.add(key)
    else:
        _known_indexes.discard(key)
    return exists


def ensure_index(spec: IndexSpec, using=None) -> bool:
    """Create the HNSW index for ``spec`` if missing. Returns True when it was created.

    Inside a transaction the index becomes visible (and is remembered as existing) only when that
    transaction commits; call it before writing rows to ``embrec_embedding`` in the same
    transaction, so that the table lock ``CREATE INDEX`` takes cannot wait on a lock we hold.
    """
    conn = using or default_connection
    key = (conn.alias, spec.name)
    if key in _known_indexes:
        return False
    with _lock:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_class WHERE relname = ANY(%s)", [_index_names(spec, False)]
            )
            if cursor.fetchone():
                _known_indexes.add(key)
                return False
            with transaction.atomic(using=conn.alias):
                if _lock_index(cursor, spec):
                    _known_indexes.add(key)
                    return False
                _create_index(cursor, spec)
    _remember_after_commit(conn, key)
    return True


def build_index(spec: IndexSpec, using=None) -> bool:
    """Build the HNSW index of ``spec`` over the rows already written; True when this call built it.

    For bulk loads that deferred the index (see ``EMBREC["INDEX_BUILD_THRESHOLD"]``): one
    ``CREATE INDEX`` over all rows is far cheaper than inserting them into the graph one by one.
    Call it outside any batch transaction. It runs in a transaction of its own, serialised with
    :func:`ensure_index` by the same advisory lock, so two workers never build one index twice
    (the second waits, then finds it built). ``maintenance_work_mem`` and
    ``max_parallel_maintenance_workers`` are raised for this transaction only
    (``INDEX_BUILD_MAINTENANCE_WORK_MEM``, ``INDEX_BUILD_PARALLEL_WORKERS``). While it builds,
    queries keep running (exact scans) and writes to ``embrec_embedding`` wait.
    """
    conn = using or default_connection
    key = (conn.alias, spec.name)
    with _lock, transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        if _lock_index(cursor, spec):
            _known_indexes.add(key)
            return False
        memory = embrec_settings.INDEX_BUILD_MAINTENANCE_WORK_MEM
        if memory:
            cursor.execute("SELECT set_config('maintenance_work_mem', %s, true)", [str(memory)])
        workers = embrec_settings.INDEX_BUILD_PARALLEL_WORKERS
        if workers is not None:
            cursor.execute(
                "SELECT set_config('max_parallel_maintenance_workers', %s, true)",
                [str(int(workers))],
            )
        _warn_if_graph_exceeds_memory(cursor, spec)
        _create_index(cursor, spec)
    _remember_after_commit(conn, key)
    return True


def hnsw_build_memory(
    rows: int, dimensions: int, *, halfvec: bool = False, binary: bool = False, m: int = 16
) -> int:
    """Bytes pgvector needs to build an HNSW graph of ``rows`` vectors in memory (an estimate).

    Per element: the vector itself, the layer-0 neighbour list (2·m candidates of ~16 bytes) and
    ~200 bytes of element and upper-layer bookkeeping. A build whose graph outgrows
    ``maintenance_work_mem`` goes on inserting on disk, many times slower. Checked against
    pgvector's own notice at 384 dimensions: 16MB holds 7,436 vectors by this estimate, 7,453 by
    pgvector's count.
    """
    per_vector = (-(-dimensions // 8) if binary else (2 if halfvec else 4) * dimensions) + 8
    return int(rows * (per_vector + 32 * m + 200))


def _warn_if_graph_exceeds_memory(cursor, spec: IndexSpec) -> None:
    cursor.execute(f"SELECT count(*) FROM embrec_embedding WHERE {spec.predicate_sql()}")
    rows = cursor.fetchone()[0]
    cursor.execute(
        "SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'"
    )
    available = cursor.fetchone()[0]
    needed = hnsw_build_memory(
        rows,
        int(spec.prefix or spec.dimensions),
        halfvec=spec.halfvec,
        binary=spec.binary,
        m=int(embrec_settings.HNSW_M),
    )
    if needed > available:
        logger.warning(
            "Building %s over %d vectors needs about %d MB of maintenance_work_mem to keep the "
            "graph in memory; it has %d MB, so the build will be much slower. Raise "
            "EMBREC['INDEX_BUILD_MAINTENANCE_WORK_MEM'] (the server must have that memory free).",
            spec.name,
            rows,
            -(-needed // 2**20),
            available // 2**20,
        )


def drop_index(spec: IndexSpec, using=None, *, exact: bool = False) -> bool:
    """Drop the HNSW index of ``spec`` (before a full re-embed, or when a version is pruned);
    unless ``exact`` also the legacy index serving it. True when one existed."""
    conn = using or default_connection
    existed = False
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        _lock_index(cursor, spec)
        for name in _index_names(spec, exact):
            cursor.execute("SELECT 1 FROM pg_class WHERE relname = %s", [name])
            existed = existed or cursor.fetchone() is not None
            cursor.execute(f"DROP INDEX IF EXISTS {name}")
    _known_indexes.discard((conn.alias, spec.name))
    return existed


def forget_indexes() -> None:
    """Clear the per-process cache of known indexes (tests that drop tables)."""
    _known_indexes.clear()


def _register_vector(conn) -> None:
    raw = conn.connection
    if getattr(raw, "_embrec_vector_registered", False):
        return
    register_vector(raw)
    raw._embrec_vector_registered = True


@dataclass
class VectorRow:
    object_pk: str
    vector: np.ndarray
    content_hash: str


_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
# Rows per chunk of a streamed COPY, and pks looked up to choose between direct COPY and upsert.
_COPY_CHUNK_ROWS = 2_000
_EXISTS_SAMPLE = 64


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _binary_field(value: int | str | datetime) -> bytes:
    """One field of a binary COPY row: length, then int4, UTF-8 text or timestamptz."""
    if isinstance(value, datetime):
        data = struct.pack(">q", (value - _PG_EPOCH) // timedelta(microseconds=1))
    elif isinstance(value, int):
        data = struct.pack(">i", value)
    else:
        data = value.encode()
    return struct.pack(">i", len(data)) + data


def copy_rows(
    rows: Sequence[VectorRow],
    dims: int,
    *,
    before_pk: Sequence[int | str | datetime] = (),
    after_pk: Sequence[int | str | datetime] = (),
) -> bytes:
    """The rows of a binary ``COPY`` stream: ``(*before_pk, object_pk, *after_pk, vector, content_hash)``.

    ``before_pk`` and ``after_pk`` are constant columns (int4, text or timestamptz) repeated on
    every row.
    Built with numpy, one structured array per (pk length, hash length) group, instead of one
    Python call per row and field: rows of a group share one byte layout, so the whole group is
    filled column by column. Row order does not matter (the table's order is not the rows').
    """
    pre = np.frombuffer(b"".join(_binary_field(v) for v in before_pk), dtype=np.uint8)
    mid = np.frombuffer(b"".join(_binary_field(v) for v in after_pk), dtype=np.uint8)
    n_fields = 3 + len(before_pk) + len(after_pk)
    pk_bytes = [row.object_pk.encode() for row in rows]
    hash_bytes = [row.content_hash.encode() for row in rows]
    vectors = np.asarray([row.vector for row in rows], dtype=np.float32)
    if vectors.shape != (len(rows), dims):
        raise ValueError(f"all vectors must have {dims} dimensions")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (pk, digest) in enumerate(zip(pk_bytes, hash_bytes, strict=True)):
        groups.setdefault((len(pk), len(digest)), []).append(i)
    parts = []
    for (pk_len, hash_len), members in groups.items():
        layout = np.dtype(
            [
                ("fields", ">i2"),
                ("pre", "u1", (len(pre),)),
                ("pk_len", ">i4"),
                ("pk", f"S{pk_len}" if pk_len else "V0"),
                ("mid", "u1", (len(mid),)),
                ("vec_len", ">i4"),
                ("dim", ">i2"),
                ("unused", ">i2"),
                ("vec", ">f4", (dims,)),
                ("hash_len", ">i4"),
                ("hash", f"S{hash_len}" if hash_len else "V0"),
            ]
        )
        block = np.empty(len(members), dtype=layout)
        block["fields"] = n_fields
        block["pre"] = pre
        block["pk_len"] = pk_len
        if pk_len:
            block["pk"] = [pk_bytes[i] for i in members]
        block["mid"] = mid
        block["vec_len"] = 4 + 4 * dims
        block["dim"] = dims
        block["unused"] = 0
        block["vec"] = vectors[members]
        block["hash_len"] = hash_len
        if hash_len:
            block["hash"] = [hash_bytes[i] for i in members]
        parts.append(block.tobytes())
    return b"".join(parts)


def _copy_in(
    raw_cursor,
    sql: str,
    rows: Sequence[VectorRow],
    dims: int,
    **constants: Sequence[int | str | datetime],
) -> None:
    """Run ``COPY … FROM STDIN (FORMAT BINARY)`` over ``rows``, streamed in chunks.

    Large batches are sent from a writer thread while the next chunk is being built, so that
    building the payload (numpy, this process) overlaps PostgreSQL's ingest of the previous chunk
    instead of adding to it; the whole payload is never held at once.
    """
    chunk = _COPY_CHUNK_ROWS
    writer = QueuedLibpqWriter(raw_cursor) if len(rows) > chunk else None
    with raw_cursor.copy(sql, writer=writer) as copy:
        copy.write(_COPY_HEADER)
        for start in range(0, len(rows), chunk):
            copy.write(copy_rows(rows[start : start + chunk], dims, **constants))
        copy.write(_COPY_TRAILER)


def _any_exists(cursor, content_type_id: int, encoder: str, identity: str, pks: list[str]) -> bool:
    """Whether a sample of ``pks`` (at most ``_EXISTS_SAMPLE``, spread over the list) is stored.

    Only chooses the write path: a row the sample missed makes the direct COPY fail with a unique
    violation, which falls back to the upsert. Checking every pk of a large batch cost about as
    much as a sixth of the write itself.
    """
    if len(pks) > _EXISTS_SAMPLE:
        pks = pks[:: -(-len(pks) // _EXISTS_SAMPLE)]
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM embrec_embedding WHERE content_type_id = %s "
        "AND encoder = %s AND identity = %s AND object_pk = ANY(%s))",
        [content_type_id, encoder, identity, pks],
    )
    return bool(cursor.fetchone()[0])


def _transaction_now(cursor) -> datetime:
    cursor.execute("SELECT now()")
    return cursor.fetchone()[0]


def write_vectors(
    content_type_id: int,
    encoder: str,
    identity: str,
    rows: Iterable[VectorRow] | Sequence[VectorRow],
    *,
    using=None,
) -> int:
    """Upsert the vectors of one encoder identity in bulk (binary COPY; see below); rows of the
    same objects under other identities (another version of the encoder) are left alone.
    Returns the number of rows written.

    When none of the rows exists yet (a first index, new objects), they are copied straight into
    ``embrec_embedding`` under a savepoint. Otherwise, or when a concurrent writer inserted one of
    them meanwhile (unique violation: the savepoint is rolled back), they are copied into a
    temporary staging table and merged with one ``INSERT … ON CONFLICT DO UPDATE``; the direct
    path writes each row once instead of twice and is about twice as fast.

    Must run inside a transaction (the staging table is emptied on commit).
    """
    conn = using or default_connection
    rows = list(rows)
    if not rows:
        return 0
    conn.ensure_connection()
    _register_vector(conn)
    dims = int(np.asarray(rows[0].vector).shape[0])
    for row in rows:
        if np.shape(row.vector) != (dims,):
            raise ValueError(
                f"all vectors must have {dims} dimensions; object {row.object_pk!r} has "
                f"shape {np.shape(row.vector)}"
            )
    pks = [row.object_pk for row in rows]
    with conn.cursor() as cursor:
        if len(set(pks)) == len(pks) and not _any_exists(
            cursor, content_type_id, encoder, identity, pks
        ):
            now = _transaction_now(cursor)  # the same timestamps as the upsert's now()
            try:
                with transaction.atomic(using=conn.alias), conn.wrap_database_errors:
                    _copy_in(
                        cursor.cursor,
                        "COPY embrec_embedding (content_type_id, object_pk, encoder, identity, "
                        "dimensions, created_at, updated_at, vector, content_hash) "
                        "FROM STDIN WITH (FORMAT BINARY)",
                        rows,
                        dims,
                        before_pk=[int(content_type_id)],
                        after_pk=[encoder, identity, dims, now, now],
                    )
                return len(rows)
            except IntegrityError:
                pass  # another transaction wrote one of these rows first: merge instead
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS embrec_stage "
            "(object_pk text, vector vector, content_hash text) ON COMMIT DELETE ROWS"
        )
        _copy_in(
            cursor.cursor,
            "COPY embrec_stage (object_pk, vector, content_hash) FROM STDIN WITH (FORMAT BINARY)",
            rows,
            dims,
        )
        cursor.execute(
            """
            INSERT INTO embrec_embedding
                (content_type_id, object_pk, encoder, identity, dimensions, vector, content_hash,
                 created_at, updated_at)
            SELECT %s, object_pk, %s, %s, %s, vector, content_hash, now(), now()
              FROM embrec_stage
            ON CONFLICT (content_type_id, object_pk, encoder, identity) DO UPDATE SET
                dimensions = EXCLUDED.dimensions,
                vector = EXCLUDED.vector,
                content_hash = EXCLUDED.content_hash,
                updated_at = now()
            """,
            [content_type_id, encoder, identity, dims],
        )
        written = cursor.rowcount
        cursor.execute("TRUNCATE embrec_stage")
    return written


def delete_vectors(
    content_type_id: int,
    object_pks: Sequence[str],
    encoder: str | None = None,
    using=None,
    *,
    identity: str | None = None,
) -> int:
    """Delete the vectors of objects (of one encoder, or all; of one identity, or all)."""
    conn = using or default_connection
    if not object_pks:
        return 0
    with conn.cursor() as cursor:
        sql = "DELETE FROM embrec_embedding WHERE content_type_id = %s AND object_pk = ANY(%s)"
        params: list = [content_type_id, list(object_pks)]
        if encoder is not None:
            sql += " AND encoder = %s"
            params.append(encoder)
        if identity is not None:
            sql += " AND identity = %s"
            params.append(identity)
        cursor.execute(sql, params)
        return cursor.rowcount
