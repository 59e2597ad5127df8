"""REST throughput under concurrent load on loopback: similar-items endpoint vs a bare DRF view.

    python -m benchmarks.bench_rest --connections 32 --duration 30

One gunicorn server (``gthread`` workers, benchmark settings) on 127.0.0.1 serves both
endpoints; ``wrk`` (or, without it, a Python thread pool) drives ``--connections`` keep-alive
connections for ``--duration`` seconds against

* ``GET /api/embrec/items/catalog.movie/<pk>/similar/?limit=10`` (rotating over the catalog), and
* ``GET /bench/constant/?limit=10`` — a DRF ``APIView`` returning a constant list of the same
  size and shape: what routing, DRF and JSON rendering cost without any query.

The load generator, the server and PostgreSQL share the same cores: the ratio is the figure to
read, not the absolute requests per second. Needs the catalog of ``bench_query`` (built if
missing).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import Server, latency_summary, save, setup_django

LUA = """
counter = 0
request = function()
  counter = counter + 7919
  local pk = counter % {n} + 1
  return wrk.format("GET", "/api/embrec/items/catalog.movie/" .. pk .. "/similar/?limit=10")
end
"""


def run_wrk(url: str, connections: int, duration: int, script: str | None) -> dict:
    cmd = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script:
        cmd += ["-s", script]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label: str) -> float | None:
        match = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "tool": "wrk",
        "requests_per_s": rps,
        "p50_ms": ms("50%"),
        "p99_ms": ms("99%"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "output": out,
    }


def run_threads(host: str, port: int, paths, connections: int, duration: int) -> dict:
    """Fallback load generator: one keep-alive connection per thread."""
    import http.client

    stop = time.monotonic() + duration
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        i = offset
        local = []
        while time.monotonic() < stop:
            start = time.perf_counter()
            conn.request("GET", paths(i))
            response = conn.getresponse()
            response.read()
            local.append(time.perf_counter() - start)
            if response.status != 200:
                errors[0] += 1
            i += connections
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = latency_summary(latencies)
    return {
        "tool": "python threads",
        "requests_per_s": len(latencies) / duration,
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "non_2xx": errors[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="catalog size")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    setup_django()
    from django.db import connection

    from benchmarks.dataset import ensure_catalog

    ensure_catalog(args.n)
    connection.close()
    use_wrk = shutil.which("wrk") is not None
    results = {}
    with Server(port=args.port, workers=args.workers, threads=args.threads):
        base = f"http://127.0.0.1:{args.port}"
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "similar.lua"
            script.write_text(LUA.format(n=args.n))
            # Short warm-up of both endpoints (every worker process loads code and connects).
            for _name, path, lua in (
                ("constant", "/bench/constant/?limit=10", None),
                ("similar", "/", str(script)),
            ):
                if use_wrk:
                    run_wrk(base + path, args.connections, 3, lua)
            for name, path, lua in (
                ("constant", "/bench/constant/?limit=10", None),
                ("similar", "/", str(script)),
            ):
                if use_wrk:
                    results[name] = run_wrk(base + path, args.connections, args.duration, lua)
                else:
                    n = args.n

                    def paths(i, name=name, n=n):
                        if name == "constant":
                            return "/bench/constant/?limit=10"
                        return (
                            f"/api/embrec/items/catalog.movie/{i * 7919 % n + 1}/similar/?limit=10"
                        )

                    results[name] = run_threads(
                        "127.0.0.1", args.port, paths, args.connections, args.duration
                    )
                print(
                    f"{name:9s} {results[name]['requests_per_s']:8.1f} req/s  "
                    f"p50 {results[name]['p50_ms']} ms  p99 {results[name]['p99_ms']} ms  "
                    f"non-2xx {results[name]['non_2xx']}"
                )
    ratio = results["similar"]["requests_per_s"] / results["constant"]["requests_per_s"]
    print(f"\nsimilar-items / bare DRF endpoint: {ratio:.2f} of the throughput")
    save(
        "rest-load",
        {
            "command": (
                f"python -m benchmarks.bench_rest --connections {args.connections} "
                f"--duration {args.duration} --workers {args.workers} --threads {args.threads}"
            ),
            "server": f"gunicorn gthread, {args.workers} workers x {args.threads} threads",
            "n_items": args.n,
            "results": {
                k: {kk: vv for kk, vv in v.items() if kk != "output"} for k, v in results.items()
            },
            "similar_vs_constant_throughput": round(ratio, 3),
        },
    )


if __name__ == "__main__":
    main()
