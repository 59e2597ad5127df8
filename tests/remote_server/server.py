"""A real OpenAI-compatible embeddings server for tests, and a proxy that misbehaves on demand.

:class:`InfinityServer` runs Infinity (``infinity_emb v2``) serving the packaged all-MiniLM-L6-v2
from its own virtualenv (built by ``tests/remote_server/setup.sh``), as a separate process on a
free loopback port, with an API key. :class:`FaultyProxy` is a small HTTP server in front of it
that forwards requests, and can answer 429/5xx, stall, or delay requests first; it records every
request (inputs per request, requests in flight at once).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "tests" / "remote_server" / "setup.sh"
VENV = ROOT / ".embrec" / "remote-server-venv"
SERVED_MODEL = "all-MiniLM-L6-v2"


def ensure_virtualenv() -> Path:
    """Build the server's virtualenv if it is missing or out of date; its ``infinity_emb``."""
    subprocess.run(["bash", str(SETUP)], check=True, timeout=3600)
    return VENV / "bin" / "infinity_emb"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class InfinityServer:
    """Infinity serving ``model_path`` under :data:`SERVED_MODEL` at :attr:`url` (``…/v1``)."""

    def __init__(self, model_path: str, log_path: Path, api_key: str | None = None):
        self.model_path = model_path
        self.log_path = log_path
        self.api_key = api_key or "test-" + secrets.token_hex(12)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 900.0) -> InfinityServer:
        executable = ensure_virtualenv()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "OMP_NUM_THREADS": "1",
        }
        for name in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"):
            env.pop(name, None)
        command = [
            str(executable), "v2",
            "--model-id", self.model_path,
            "--served-model-name", SERVED_MODEL,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--url-prefix", "/v1",
            "--engine", "torch",
            "--device", "cpu",
            "--dtype", "float32",
            "--batch-size", "16",
            "--no-model-warmup",
            "--api-key", self.api_key,
            "--log-level", "warning",
        ]  # fmt: skip
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Infinity exited at start:\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"Infinity did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.url}/models", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@dataclass
class Seen:
    """One request that reached the proxy."""

    inputs: int
    authorized: bool
    answered: int = 0


@dataclass
class FaultyProxy:
    """Forwards ``POST /v1/embeddings`` to ``upstream`` (an ``…/v1`` URL).

    ``faults`` is consumed one entry per request: ``(status, headers)`` answers that status
    without forwarding, ``("stall", seconds)`` waits then forwards (longer than the client's
    timeout: the client gives up), ``None`` forwards. ``delay`` seconds are waited before every
    forward (requests then overlap, to observe concurrency).
    """

    upstream: str
    faults: list = field(default_factory=list)
    delay: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                proxy.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        try:
            inputs = len(json.loads(body).get("input", []))
        except ValueError:
            inputs = -1
        seen = Seen(inputs, bool(handler.headers.get("Authorization")))
        with self._lock:
            self.seen.append(seen)
            fault = self.faults.pop(0) if self.faults else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if fault is not None and fault[0] != "stall":
                status, headers = fault
                payload = json.dumps({"error": {"message": f"injected {status}"}}).encode()
                self.reply(handler, status, payload, headers)
                seen.answered = status
                return
            if fault is not None:
                time.sleep(fault[1])
            if self.delay:
                time.sleep(self.delay)
            status, payload = self.forward(handler, body)
            self.reply(handler, status, payload, {})
            seen.answered = status
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a stall longer than its timeout)
        finally:
            with self._lock:
                self._in_flight -= 1

    def forward(self, handler: BaseHTTPRequestHandler, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if handler.headers.get("Authorization"):
            headers["Authorization"] = handler.headers["Authorization"]
        request = urllib.request.Request(
            self.upstream + handler.path.removeprefix("/v1"), data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    @staticmethod
    def reply(handler, status: int, payload: bytes, headers: dict) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
