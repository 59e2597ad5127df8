"""Smaller vectors, same answers: HNSW index options side by side with full-precision ``vector``.

    python -m benchmarks.bench_quantize --n 100000 --queries 300
    python -m benchmarks.bench_quantize --n 1000000 --queries 300 --options vector,halfvec,bit

Raw SQL against the embedded PostgreSQL (pgvector 0.8): one table ``bq_<n>`` holds every item's
384-d vector (``embedding vector(384)``) and its PCA projection (``pca vector(k)``, fitted on the
items). Each option is one HNSW index over that table:

* ``vector`` — ``embedding vector_cosine_ops`` (the baseline: what embrec builds today);
* ``halfvec`` — ``(embedding::halfvec(384)) halfvec_cosine_ops``;
* ``bit`` — ``(binary_quantize(embedding)::bit(384)) bit_hamming_ops``: the Hamming search
  returns ``--candidates`` rows that are re-ranked by the exact cosine of the full vector
  (``bit:400``: the same index with 400 candidates);
* ``bit-centred`` — the same over ``binary_quantize(embedding - mean)`` (signs around the
  catalog's mean vector, as the PCA option stores them), re-ranked likewise;
* ``prefix<k>`` / ``prefix<k>-halfvec`` — the first ``k`` dimensions of the ``rot`` column (the
  vectors rotated onto their principal axes, as ``ReducedEncoder`` ``"method": "rotate"`` stores
  them; every cosine unchanged), ``(subvector(rot, 1, k)::halfvec(k)) halfvec_cosine_ops``: the
  index option ``"index_dimensions": k``. Like ``bit``, the index search returns
  ``--candidates`` rows, re-ranked by the exact cosine of the full rotated vectors
  (``prefix96-halfvec:100``: the same index with 100 candidates); ``prefix96-halfvec-plain``:
  the same over the vectors as the model gives them (not rotated);
* ``pca<k>`` / ``pca<k>-halfvec`` — the ``pca`` column (the encoder's reduced vectors);
* ``truncate<k>`` — the first ``k`` dimensions (Matryoshka truncation; all-MiniLM-L6-v2 was not
  trained for it, so this row shows what truncation costs a model that was not).

For each option the run reports the index size (``pg_relation_size``), its build time
(``maintenance_work_mem`` 3GB, one parallel maintenance worker, ``--m`` and
``--ef-construction`` embrec's defaults unless given) and, over the same query vectors
taken in a shuffled round-robin (so that load on the shared machine hits every option alike),
p50/p99 latency of the SQL query measured at the client and recall@10 against the exact top 10
of the full 384-d vectors (numpy, float32).

Vectors. The 300 query vectors are all-MiniLM-L6-v2 (the packaged model) vectors of held-out
synthetic catalog texts (:mod:`benchmarks.texts`). Items: ``--source minilm`` (the default when
``n`` MiniLM vectors are cached) are MiniLM vectors of ``n`` catalog texts; ``--source mixture``
(the default otherwise) are the cached real MiniLM vectors (``--base``: how many, default all)
plus synthetic ones, each ``normalise(x_i + a·x_j + s·(x_p − x_q)/√2)`` with ``x_i, x_j, x_p,
x_q`` real vectors drawn at random, ``a ~ U(0, 0.3)``, ``s = --noise``: a real vector, nudged
towards another and perturbed by a difference of two real vectors, whose covariance is the real
vectors' own (the anisotropy of real embeddings is kept, unlike uniform random vectors). The run
reports the mean cosine of the queries' 10th exact neighbour in the real part, the synthetic part
and all items. MiniLM vectors are encoded in resumable chunks cached under ``.embrec/cache/``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np

from benchmarks.common import ROOT, latency_summary, percentile, save
from benchmarks.texts import item_texts
from embrec.conf import DEFAULTS

DIMS = 384
CACHE = ROOT / ".embrec" / "cache"
DEFAULT_OPTIONS = (
    "vector,halfvec,bit,bit:400,prefix96-halfvec,prefix96-halfvec:100,prefix64-halfvec,"
    "prefix96-halfvec-plain,pca128-halfvec"
)


# -- vectors ------------------------------------------------------------------------------------


def minilm_vectors(n: int, seed: int, *, partial: bool = False) -> np.ndarray:
    """all-MiniLM-L6-v2 vectors of ``n`` synthetic catalog texts (cached on disk).

    Encoded in chunks of 1,024 texts, each saved as it is done, so an interrupted run resumes.
    With ``partial`` only the chunks already cached are returned (possibly fewer than ``n``).
    """
    path = CACHE / f"minilm-texts-{n}-seed{seed}.npy"
    if path.exists():
        return np.load(path)
    folder = CACHE / f"minilm-texts-seed{seed}"
    texts: list[str] = []
    chunks = []
    for lo in range(0, n, 1024):
        chunk_path = folder / f"{lo:08d}-{min(n, lo + 1024):08d}.npy"
        if chunk_path.exists():
            chunks.append(np.load(chunk_path))
            continue
        if partial:
            break
        folder.mkdir(parents=True, exist_ok=True)
        texts = texts or item_texts(n, seed=seed)
        chunks.append(_encode(texts[lo : lo + 1024]))
        np.save(chunk_path, chunks[-1])
        print(f"  {lo + len(chunks[-1])}/{n} texts encoded", flush=True)
    out = np.concatenate(chunks) if chunks else np.zeros((0, DIMS), np.float32)
    if len(out) == n:
        np.save(path, out)
    return out


_engine = None
#: torch threads of the MiniLM encoding (``--threads``).
_threads = 1


def _encode(texts: list[str]) -> np.ndarray:
    global _engine
    if _engine is None:
        import torch
        from sentence_transformers import SentenceTransformer

        from embrec.encoders.engine import EncodingEngine
        from embrec.encoders.sentence_transformer import default_model_path

        # One thread by default: on a shared, oversubscribed CPU a second one mostly spins.
        torch.set_num_threads(_threads)
        model = SentenceTransformer(default_model_path(), device="cpu")
        _engine = EncodingEngine(model, device="cpu", dtype="float32", chunk_size=1024)
    return np.asarray(_engine.encode(texts), dtype=np.float32)


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def mixture_vectors(base: np.ndarray, n: int, noise: float, seed: int = 7) -> np.ndarray:
    """``base`` followed by ``n - len(base)`` synthetic vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    out[: len(base)] = base
    for lo in range(len(base), n, 100_000):
        m = min(n, lo + 100_000) - lo
        i, j, p, q = (rng.integers(0, len(base), m) for _ in range(4))
        a = rng.uniform(0.0, 0.3, (m, 1)).astype(np.float32)
        mixed = base[i] + a * base[j] + noise * (base[p] - base[q]) / np.sqrt(2.0)
        out[lo : lo + m] = normalise(mixed)
    return out


def fit_pca(x: np.ndarray, k: int, sample: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, components)`` of the top ``k`` principal directions (numpy SVD of a sample)."""
    rng = np.random.default_rng(0)
    rows = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    mean = rows.mean(axis=0)
    cov = np.cov((rows - mean).T.astype(np.float64))
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:k]
    return mean.astype(np.float32), vectors[:, order].T.astype(np.float32)


def fit_rotation(x: np.ndarray, sample: int = 100_000) -> np.ndarray:
    """The orthonormal basis of the vectors' principal axes (eigenvectors of the uncentred second
    moment, largest first): rotating by it keeps every cosine and puts the most information in
    the leading dimensions (what ``embrec.encoders.reduced.ReducedEncoder`` ``"rotate"`` does)."""
    rng = np.random.default_rng(0)
    rows = x if len(x) <= sample else x[rng.choice(len(x), sample, replace=False)]
    values, vectors = np.linalg.eigh(rows.T.astype(np.float64) @ rows.astype(np.float64))
    return vectors[:, np.argsort(values)[::-1]].T.astype(np.float32)


def exact_top(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top ``k`` by cosine (items and queries are unit vectors)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for lo in range(0, len(queries), 50):
        scores = queries[lo : lo + 50] @ items.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        out[lo : lo + 50] = top
    return out


def kth_neighbour_cosine(items: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    scores = queries @ items.T
    return float(np.mean(-np.partition(-scores, k - 1, axis=1)[:, k - 1]))


# -- options ------------------------------------------------------------------------------------


class Option:
    """One index and the query that uses it."""

    def __init__(
        self, name: str, table: str, pca_dims: int, candidates: int, graph: dict[str, int]
    ) -> None:
        self.name = name
        self.table = table
        self.graph = graph
        # "bit:400": the bit index queried with 400 candidates (same index as "bit").
        name, _, override = name.partition(":")
        if override:
            candidates = int(override)
        self.kind = name
        self.index = f"{table}_{name.replace('-', '_')}"
        self.rerank = name.startswith("bit")
        self.rerank_column, self.rerank_query = "embedding", "q"
        self.candidates = candidates
        full = "%(q)s::vector(384)"
        if name == "vector":
            self.expression, self.opclass = "embedding", "vector_cosine_ops"
            self.order = f"embedding <=> {full}"
        elif name == "halfvec":
            self.expression, self.opclass = "(embedding::halfvec(384))", "halfvec_cosine_ops"
            self.order = "(embedding::halfvec(384)) <=> %(q)s::halfvec(384)"
        elif name in {"bit", "bit-centred"}:
            source = "embedding" if name == "bit" else "(embedding - %(mean)s::vector(384))"
            self.expression_template = f"(binary_quantize({source})::bit(384))"
            self.opclass = "bit_hamming_ops"
            self.order = None  # set by with_mean()
        elif name.startswith("prefix"):
            # The leading dimensions of the rotated vectors (ReducedEncoder method "rotate"),
            # re-ranked by the full rotated vectors: the index option "index_dimensions".
            dims = int(name[6:].split("-")[0])
            half = "-halfvec" in name
            # "-plain": the leading dimensions of the vectors as the model gives them.
            column, query = ("embedding", "q") if name.endswith("-plain") else ("rot", "r")
            kind = f"halfvec({dims})" if half else f"vector({dims})"
            self.expression = f"(subvector({column}, 1, {dims})::{kind})"
            self.opclass = "halfvec_cosine_ops" if half else "vector_cosine_ops"
            self.order = (
                f"{self.expression} <=> subvector(%({query})s::vector(384), 1, {dims})::{kind}"
            )
            self.rerank = True
            self.rerank_column = column
            self.rerank_query = query
        elif name.startswith("pca"):
            dims = int(name[3:].split("-")[0])
            if dims != pca_dims:
                raise SystemExit(f"option {name}: --pca-dims is {pca_dims}")
            half = name.endswith("-halfvec")
            kind = f"halfvec({dims})" if half else f"vector({dims})"
            self.expression = f"(pca::{kind})" if half else "pca"
            self.opclass = "halfvec_cosine_ops" if half else "vector_cosine_ops"
            self.order = f"{self.expression} <=> %(p)s::{kind}"
        elif name.startswith("truncate"):
            dims = int(name[8:])
            kind = f"vector({dims})"
            self.expression = f"(subvector(embedding, 1, {dims})::{kind})"
            self.opclass = "vector_cosine_ops"
            self.order = f"{self.expression} <=> subvector({full}, 1, {dims})::{kind}"
        else:
            raise SystemExit(f"unknown option {name!r}")

    def with_mean(self, mean_literal: str) -> None:
        if not self.kind.startswith("bit"):
            return
        self.expression = self.expression_template.replace("%(mean)s", f"'{mean_literal}'")
        query_source = (
            "%(q)s::vector(384)"
            if self.kind == "bit"
            else f"(%(q)s::vector(384) - '{mean_literal}'::vector(384))"
        )
        self.order = f"{self.expression} <~> binary_quantize({query_source})::bit(384)"

    @property
    def create_sql(self) -> str:
        return (
            f"CREATE INDEX {self.index} ON {self.table} USING hnsw ({self.expression} "
            f"{self.opclass}) WITH (m = {self.graph['m']}, "
            f"ef_construction = {self.graph['ef_construction']})"
        )

    def query_sql(self, k: int) -> str:
        if self.rerank:
            return (
                f"SELECT id FROM (SELECT id, {self.rerank_column} AS v FROM {self.table} "
                f"ORDER BY {self.order} LIMIT {self.candidates}) c "
                f"ORDER BY c.v <=> %({self.rerank_query})s::vector(384) LIMIT {k}"
            )
        return f"SELECT id FROM {self.table} ORDER BY {self.order} LIMIT {k}"


def vector_text(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in v) + "]"


# -- database -----------------------------------------------------------------------------------


def connect():
    os.environ.setdefault("EMBREC_DATABASE_NAME", "embrec_quantize")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django
    import psycopg
    from django.conf import settings

    django.setup()
    db = settings.DATABASES["default"]
    conn = psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
        autocommit=True,
    )
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return conn, db


def new_connection(db):
    import psycopg

    return psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
        autocommit=True,
    )


def load_table(
    conn, table: str, items: np.ndarray, pca_items: np.ndarray, rot_items: np.ndarray
) -> float:
    from pgvector.psycopg import register_vector

    register_vector(conn)
    started = time.perf_counter()
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(
        f"CREATE TABLE {table} (id integer PRIMARY KEY, embedding vector({items.shape[1]}), "
        f"pca vector({pca_items.shape[1]}), rot vector({rot_items.shape[1]}))"
    )
    copy = f"COPY {table} (id, embedding, pca, rot) FROM STDIN WITH (FORMAT BINARY)"
    with conn.cursor() as cur:
        with cur.copy(copy) as cp:
            cp.set_types(["int4", "vector", "vector", "vector"])
            for i in range(len(items)):
                cp.write_row((i, items[i], pca_items[i], rot_items[i]))
    conn.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--options", default=DEFAULT_OPTIONS)
    parser.add_argument("--source", choices=["minilm", "mixture"], default=None)
    parser.add_argument(
        "--base", type=int, default=0, help="real vectors of a mixture (default: all cached)"
    )
    parser.add_argument("--noise", type=float, default=0.8)
    parser.add_argument("--pca-dims", type=int, default=128)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=200, help="bit: rows re-ranked")
    parser.add_argument("--memory", default="3GB", help="maintenance_work_mem of the builds")
    parser.add_argument("--m", type=int, default=DEFAULTS["HNSW_M"], help="HNSW m")
    parser.add_argument(
        "--ef-construction", type=int, default=DEFAULTS["HNSW_EF_CONSTRUCTION"], help="HNSW build"
    )
    parser.add_argument("--reuse", action="store_true", help="keep table and built indexes")
    parser.add_argument("--name", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the encoding")
    args = parser.parse_args()
    if not 1 <= args.ef_search <= 1000 or not 1 <= args.candidates <= 1000:
        parser.error(
            "--ef-search and --candidates must be 1 to 1000 (pgvector's hnsw.ef_search range)"
        )
    if not 2 <= args.m <= 100 or not max(4, 2 * args.m) <= args.ef_construction <= 1000:
        parser.error("pgvector needs --m 2 to 100 and --ef-construction 2 × m to 1000")
    global _threads
    _threads = args.threads
    k = args.k

    # Vectors: items, held-out queries, the exact answers.
    queries = normalise(minilm_vectors(args.queries, seed=101))
    real = minilm_vectors(args.n, seed=5, partial=True)
    source = args.source or ("minilm" if len(real) == args.n else "mixture")
    if source == "minilm":
        if len(real) < args.n:
            real = minilm_vectors(args.n, seed=5)
        items = normalise(real)
        structure = {"minilm_10th_neighbour_cosine": round(kth_neighbour_cosine(items, queries), 4)}
    else:
        base = normalise(real[: args.base] if args.base else real)
        if len(base) < 1000:
            raise SystemExit(f"only {len(base)} MiniLM vectors cached; encode more first")
        items = mixture_vectors(base, args.n, args.noise)
        structure = {
            "real_minilm_vectors": len(base),
            "minilm_base_10th_neighbour_cosine": round(kth_neighbour_cosine(base, queries), 4),
            "synthetic_part_10th_neighbour_cosine": round(
                kth_neighbour_cosine(items[len(base) : 2 * len(base)], queries), 4
            ),
            "all_items_10th_neighbour_cosine": round(
                kth_neighbour_cosine(items, queries[: min(100, len(queries))]), 4
            ),
        }
    print("vectors:", source, items.shape, structure)
    truth = exact_top(items, queries, k)
    mean, components = fit_pca(items, args.pca_dims)
    pca_items = normalise((items - mean) @ components.T)
    pca_queries = normalise((queries - mean) @ components.T)
    mean_literal = vector_text(mean)
    rotation = fit_rotation(items)
    rot_items, rot_queries = items @ rotation.T, queries @ rotation.T

    conn, db = connect()
    graph = {"m": args.m, "ef_construction": args.ef_construction}
    # Another graph is another table, so that --reuse never mixes indexes of two graphs.
    default_graph = graph == {
        "m": DEFAULTS["HNSW_M"],
        "ef_construction": DEFAULTS["HNSW_EF_CONSTRUCTION"],
    }
    table = f"bq_{args.n}" if default_graph else f"bq_{args.n}_m{args.m}_efc{args.ef_construction}"
    options = [
        Option(o, table, args.pca_dims, args.candidates, graph) for o in args.options.split(",")
    ]
    for option in options:
        option.with_mean(mean_literal)
    state_path = CACHE / f"quantize-state-{table.removeprefix('bq_')}.json"
    state = json.loads(state_path.read_text()) if args.reuse and state_path.exists() else {}
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()[0]
    if not (args.reuse and exists and state.get("rows") == args.n):
        load_s = load_table(conn, table, items, pca_items, rot_items)
        state = {"rows": args.n, "load_s": round(load_s, 1)}
        state_path.write_text(json.dumps(state))
        print(f"table {table}: {args.n} rows loaded in {state['load_s']} s")
    conn.execute(f"SET maintenance_work_mem = '{args.memory}'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    builds = state.setdefault("builds", {})
    for option in options:
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [option.index]).fetchone()[0]
        if present and option.kind in builds:
            print(f"{option.kind}: index reused (built in {builds[option.kind]} s)")
            continue
        conn.execute(f"DROP INDEX IF EXISTS {option.index}")
        print(f"{time.strftime('%H:%M:%S')} building {option.kind} ...", flush=True)
        started = time.perf_counter()
        conn.execute(option.create_sql)
        builds[option.kind] = round(time.perf_counter() - started, 1)
        state_path.write_text(json.dumps(state))
        print(f"  {option.kind}: built in {builds[option.kind]} s", flush=True)
    sizes = {
        o.name: conn.execute("SELECT pg_relation_size(%s)", [o.index]).fetchone()[0]
        for o in options
    }
    table_bytes = conn.execute("SELECT pg_table_size(%s)", [table]).fetchone()[0]

    def query_params(qi: int) -> dict[str, str]:
        return {
            "q": vector_text(queries[qi]),
            "p": vector_text(pca_queries[qi]),
            "r": vector_text(rot_queries[qi]),
        }

    # One connection per option, its ef_search set once.
    conns = {}
    plans = {}
    for option in options:
        c = new_connection(db)
        ef = max(args.ef_search, option.candidates if option.rerank else 0)
        c.execute(f"SET hnsw.ef_search = {ef}")
        conns[option.name] = c
        params = query_params(0)
        plan = c.execute("EXPLAIN " + option.query_sql(k), params).fetchall()
        plans[option.name] = option.index in " ".join(r[0] for r in plan)
    print("plans use their index:", plans)

    def run(option: Option, qi: int) -> tuple[float, list[int]]:
        params = query_params(qi)
        sql = option.query_sql(k)
        started = time.perf_counter()
        rows = conns[option.name].execute(sql, params).fetchall()
        return time.perf_counter() - started, [r[0] for r in rows]

    rnd = random.Random(11)
    for qi in range(min(50, len(queries))):  # warm-up: connections, plans, index pages
        for option in options:
            run(option, qi)
    timings: dict[str, list[float]] = {o.name: [] for o in options}
    recalls: dict[str, list[float]] = {o.name: [] for o in options}
    for qi in range(len(queries)):
        order = options[:]
        rnd.shuffle(order)
        expected = set(truth[qi].tolist())
        for option in order:
            seconds, ids = run(option, qi)
            timings[option.name].append(seconds)
            recalls[option.name].append(len(expected & set(ids)) / k)

    base_size = sizes.get("vector")
    base_p50 = percentile(timings["vector"], 50) if "vector" in timings else None
    results = {}
    for option in options:
        lat = latency_summary(timings[option.name])
        entry = {
            "index_mb": round(sizes[option.name] / 2**20, 1),
            "build_s": builds[option.kind],
            **lat,
            f"recall@{k}": round(float(np.mean(recalls[option.name])), 4),
            "uses_index": plans[option.name],
        }
        if option.rerank:
            entry["candidates"] = option.candidates
        if base_size:
            entry["size_ratio_vs_vector"] = round(base_size / sizes[option.name], 2)
        if base_p50:
            entry["p50_vs_vector"] = round(lat["p50_ms"] / (base_p50 * 1000), 2)
        results[option.name] = entry

    print(
        f"\n{'option':16s} {'index MB':>9s} {'x smaller':>9s} {'build s':>8s} "
        f"{'p50 ms':>7s} {'p99 ms':>7s} {'recall@' + str(k):>9s}"
    )
    for name, e in results.items():
        print(
            f"{name:16s} {e['index_mb']:9.1f} {e.get('size_ratio_vs_vector', 0):9.2f} "
            f"{e['build_s']:8.1f} {e['p50_ms']:7.2f} {e['p99_ms']:7.2f} {e[f'recall@{k}']:9.3f}"
        )
    command = "python -m benchmarks.bench_quantize " + " ".join(
        f"--{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if value not in (None, False) and key not in {"reuse", "name"}
    )
    save(
        args.name or f"quantize-{args.n}",
        {
            "command": command,
            "source": source,
            "structure": structure,
            "n_items": args.n,
            "n_queries": len(queries),
            "ef_search": args.ef_search,
            "hnsw": graph,
            "maintenance_work_mem": args.memory,
            "table_mb": round(table_bytes / 2**20, 1),
            "load_s": state.get("load_s"),
            "results": results,
        },
    )
    for c in conns.values():
        c.close()
    conn.close()


if __name__ == "__main__":
    main()
