"""REST endpoints side by side: CPU and statements per request, and throughput under load.

    python -m benchmarks.bench_rest --requests 300 --duration 30

Endpoints (all in the benchmark project, over the same 100k-movie catalog and HNSW index):

* ``constant`` — ``GET /bench/constant/?limit=10``: a DRF ``APIView`` returning a constant list of
  the same shape (what routing, DRF and JSON rendering cost without any query);
* ``pgvector`` — ``GET /bench/pgvector/<pk>/similar/?limit=10``: the similar-items view a team
  would write with pgvector-python's ``CosineDistance`` (:mod:`benchmarks.handwritten`);
* ``raw_sql`` — ``GET /bench/raw/<pk>/similar/?limit=10``: the same in one hand-written statement;
* ``similar`` — embrec's ``GET /api/embrec/items/catalog.movie/<pk>/similar/?limit=10``;
* ``personal`` — embrec's ``GET /api/embrec/recommendations/?type=catalog.movie&limit=10``
  (Basic auth, 50 users in turn; explanations on, the default);
* ``personal_pop`` — the same with ``popularity=0.4`` (the demo's tuned blend: the most popular
  items join the candidates).

Item pks rotate over the catalog (``pk = i * 7919 % n + 1``), the same sequence for every side.

**Per request, in this process** (``--requests`` per endpoint, interleaved in ``--rounds``
chunks): each request goes through Django's WSGI handler in this process, no HTTP. Reported: the
Python process's CPU time, the PostgreSQL backends' CPU time (``/proc``), the SQL statements
Django sends (``CaptureQueriesContext``) and, when ``pg_stat_statements`` is loaded
(``EMBREC_PG_SETTINGS=shared_preload_libraries=pg_stat_statements``), every statement the server
ran, transaction commands included: the round trips. ``--profile`` also writes a cProfile of
the embrec endpoints to ``benchmarks/results/profile-<endpoint>.txt``.

**Under load** (``--duration`` seconds per endpoint, in ``--rounds`` interleaved slots): one
gunicorn server (``gthread``) on 127.0.0.1, ``--connections`` keep-alive client connections
from a thread pool in this process; requests/s and the server's CPU per request (gunicorn
processes + PostgreSQL backends). Load generator, server and PostgreSQL share the cores: read the
ratios between sides of the same run.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import http.client
import io
import pstats
import threading
import time

from benchmarks.common import (
    RESULTS,
    CPUMeter,
    Server,
    backend_pids,
    latency_summary,
    process_group,
    save,
    setup_django,
)

ENDPOINTS = ("constant", "pgvector", "raw_sql", "similar", "personal", "personal_pop")
BASELINE = "pgvector"
N_USERS = 50


def endpoint_request(name: str, i: int, n: int, auth: list[str]) -> tuple[str, dict[str, str]]:
    """Path and headers of request ``i`` of an endpoint."""
    pk = i * 7919 % n + 1
    if name == "constant":
        return "/bench/constant/?limit=10", {}
    if name == "pgvector":
        return f"/bench/pgvector/{pk}/similar/?limit=10", {}
    if name == "raw_sql":
        return f"/bench/raw/{pk}/similar/?limit=10", {}
    if name == "similar":
        return f"/api/embrec/items/catalog.movie/{pk}/similar/?limit=10", {}
    path = "/api/embrec/recommendations/?type=catalog.movie&limit=10"
    if name == "personal_pop":
        path += "&popularity=0.4"
    return path, {"Authorization": auth[i % len(auth)]}


def wsgi_caller():
    """Call Django's WSGI handler in this process: ``call(path, headers) -> body``."""
    from django.core.handlers.wsgi import WSGIHandler

    app = WSGIHandler()

    def call(path: str, headers: dict[str, str]) -> bytes:
        route, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": route,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
            "wsgi.errors": io.StringIO(),
        }
        for key, value in headers.items():
            environ["HTTP_" + key.upper().replace("-", "_")] = value
        status: list[str] = []
        response = app(environ, lambda s, h, exc_info=None: status.append(s))
        try:
            body = b"".join(response)
        finally:
            response.close()
        if not status[0].startswith("200"):
            raise RuntimeError(f"{path}: {status[0]} {body[:300]!r}")
        return body

    return call


def statements_server(meter_conn) -> int | None:
    """Statements run by the server in this database so far (``pg_stat_statements``)."""
    if meter_conn is None:
        return None
    row = meter_conn.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND userid = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
        "AND query NOT LIKE '%%pg_stat_statements%%'"
    ).fetchone()
    return int(row[0])


def in_process(args, auth: list[str], meter_conn, pgss) -> dict:
    """CPU time and statements per request of each endpoint, through the WSGI handler."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    call = wsgi_caller()
    names = args.endpoints
    for name in names:  # warm-up: imports, connections, caches, index pages
        for i in range(20):
            call(*endpoint_request(name, i, args.n, auth))
    per_round = max(1, args.requests // args.rounds)
    totals = {name: {"python_s": 0.0, "postgres_s": 0.0, "wall_s": 0.0, "n": 0} for name in names}
    pg_meter = CPUMeter(lambda: backend_pids(meter_conn.cursor()))
    offset = 1000
    for _ in range(args.rounds):
        for name in names:
            pg_meter.start()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for i in range(offset, offset + per_round):
                call(*endpoint_request(name, i, args.n, auth))
            totals[name]["python_s"] += time.process_time() - cpu0
            totals[name]["wall_s"] += time.perf_counter() - wall0
            totals[name]["postgres_s"] += pg_meter.stop()
            totals[name]["n"] += per_round
        offset += per_round
    results = {}
    for name in names:
        t = totals[name]
        counted = 20
        with CaptureQueriesContext(connection) as captured:
            for i in range(counted):
                call(*endpoint_request(name, i, args.n, auth))
        django_statements = len(captured.captured_queries) / counted
        server_statements = None
        if pgss:
            before = statements_server(meter_conn)
            for i in range(counted):
                call(*endpoint_request(name, i, args.n, auth))
            server_statements = (statements_server(meter_conn) - before) / counted
        results[name] = {
            "requests": t["n"],
            "python_cpu_ms": round(1000 * t["python_s"] / t["n"], 3),
            "postgres_cpu_ms": round(1000 * t["postgres_s"] / t["n"], 3),
            "cpu_ms": round(1000 * (t["python_s"] + t["postgres_s"]) / t["n"], 3),
            "wall_ms": round(1000 * t["wall_s"] / t["n"], 3),
            "django_statements": round(django_statements, 2),
            "server_statements": None if server_statements is None else round(server_statements, 2),
        }
        if name in ("similar", "personal") and args.profile:
            results[name]["profile"] = profile(call, name, args, auth)
    return results


def profile(call, name: str, args, auth: list[str]) -> str:
    """cProfile of ``--requests`` requests of an endpoint (CPU time of this process, so that
    waiting on PostgreSQL does not count); the report's path."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for i in range(args.requests):
        call(*endpoint_request(name, 5000 + i, args.n, auth))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    path = RESULTS / f"profile-{name}.txt"
    path.write_text(out.getvalue())
    return str(path.relative_to(RESULTS.parent.parent))


def under_load(args, auth: list[str], meter_conn) -> dict:
    """Requests/s and server CPU per request of each endpoint, gunicorn under concurrent load."""
    results = {
        name: {"requests": 0, "seconds": 0.0, "cpu_s": 0.0, "lat": []} for name in args.endpoints
    }
    slot = max(1.0, args.duration / args.rounds)
    with Server(port=args.port, workers=args.workers, threads=args.threads) as server:
        group = server.proc.pid
        meter = CPUMeter(lambda: process_group(group) + backend_pids(meter_conn.cursor()))
        for name in args.endpoints:  # warm-up: every worker thread connects and loads its code
            drive(args, name, auth, 2.0, 0)
        offset = 0
        for _ in range(args.rounds):
            for name in args.endpoints:
                meter.start()
                done, latencies = drive(args, name, auth, slot, offset)
                results[name]["cpu_s"] += meter.stop()
                results[name]["requests"] += done
                results[name]["seconds"] += slot
                results[name]["lat"] += latencies
            offset += 100_000
    out = {}
    for name, r in results.items():
        summary = latency_summary(r["lat"])
        out[name] = {
            "requests_per_s": round(r["requests"] / r["seconds"], 1),
            "server_cpu_ms": round(1000 * r["cpu_s"] / max(r["requests"], 1), 3),
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
        }
    return out


def drive(args, name: str, auth: list[str], seconds: float, offset: int) -> tuple[int, list[float]]:
    """``--connections`` keep-alive connections for ``seconds``; (completed requests, latencies)."""
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=30)
        local = []
        i = offset + k
        while time.monotonic() < stop:
            path, headers = endpoint_request(name, i, args.n, auth)
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                errors.append(f"{path}: {response.status} {body[:200]!r}")
                break
            local.append(time.perf_counter() - start)
            i += args.connections
        conn.close()
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return len(latencies), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="catalog size")
    parser.add_argument("--requests", type=int, default=300, help="in-process requests per side")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each side")
    parser.add_argument("--duration", type=int, default=30, help="seconds of load per side")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--endpoints", nargs="+", default=list(ENDPOINTS), choices=ENDPOINTS)
    parser.add_argument("--profile", action="store_true", help="cProfile the embrec endpoints")
    parser.add_argument("--name", default="rest", help="results file name")
    args = parser.parse_args()
    setup_django()

    import psycopg
    from django.conf import settings
    from django.db import connection

    from benchmarks.dataset import ensure_catalog

    info = ensure_catalog(args.n, users=N_USERS)
    auth = [
        "Basic " + base64.b64encode(f"bench_user_{u}:bench".encode()).decode()
        for u in range(N_USERS)
    ]
    db = settings.DATABASES["default"]
    meter_conn = psycopg.connect(
        host=db["HOST"],
        port=db["PORT"],
        user=db["USER"],
        password=db.get("PASSWORD") or None,
        dbname=db["NAME"],
        autocommit=True,
    )
    try:
        meter_conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        meter_conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()
        pgss = True
    except psycopg.Error:
        pgss = False
    inproc = in_process(args, auth, meter_conn, pgss)
    connection.close()
    load = under_load(args, auth, meter_conn) if args.duration > 0 else {}
    meter_conn.close()

    base_in = inproc.get(BASELINE)
    base_load = load.get(BASELINE)
    print(
        f"\n{'endpoint':13s} {'py CPU':>7s} {'PG CPU':>7s} {'CPU ms':>7s} {'÷pgv':>5s} "
        f"{'stmts':>5s} {'trips':>5s} | {'req/s':>7s} {'÷pgv':>5s} {'srv CPU':>7s} {'p50':>7s}"
    )
    for name in args.endpoints:
        r = inproc[name]
        if base_in:
            r["cpu_vs_pgvector"] = round(r["cpu_ms"] / base_in["cpu_ms"], 3)
        line = (
            f"{name:13s} {r['python_cpu_ms']:7.2f} {r['postgres_cpu_ms']:7.2f} {r['cpu_ms']:7.2f} "
            f"{r.get('cpu_vs_pgvector', float('nan')):5.2f} {r['django_statements']:5.1f} "
            f"{r['server_statements'] if r['server_statements'] is not None else '-':>5}"
        )
        if name in load:
            lr = load[name]
            if base_load:
                lr["rps_vs_pgvector"] = round(lr["requests_per_s"] / base_load["requests_per_s"], 3)
                lr["cpu_vs_pgvector"] = round(lr["server_cpu_ms"] / base_load["server_cpu_ms"], 3)
            line += (
                f" | {lr['requests_per_s']:7.1f} {lr.get('rps_vs_pgvector', float('nan')):5.2f} "
                f"{lr['server_cpu_ms']:7.2f} {lr['p50_ms']:7.2f}"
            )
        print(line)
    if "similar" in inproc and "personal" in inproc:
        ratio = inproc["personal"]["cpu_ms"] / inproc["similar"]["cpu_ms"]
        print(f"\npersonal / similar CPU per request (in process): {ratio:.2f}")
    save(
        args.name,
        {
            "command": (
                f"python -m benchmarks.bench_rest --requests {args.requests} --rounds "
                f"{args.rounds} --duration {args.duration} --connections {args.connections} "
                f"--workers {args.workers} --threads {args.threads}"
            ),
            "catalog": info,
            "server": f"gunicorn gthread, {args.workers} workers x {args.threads} threads",
            "pg_stat_statements": pgss,
            "in_process": inproc,
            "under_load": load,
        },
    )


if __name__ == "__main__":
    main()
