"""Encoder for remote embedding services that speak the OpenAI ``/v1/embeddings`` protocol.

Hosted APIs (OpenAI and compatible providers) and self-hosted servers for models too large for
the workers (Infinity, vLLM, text-embeddings-inference, llama.cpp, Ollama…) all accept::

    POST {url}/embeddings  {"model": "...", "input": ["text", ...]}
    -> {"data": [{"index": 0, "embedding": [...]}, ...], "model": "..."}

Configuration::

    EMBREC = {"ENCODERS": {
        "openai": {
            "CLASS": "embrec.encoders.remote.RemoteEmbeddingEncoder",
            "OPTIONS": {
                "url": "https://api.openai.com/v1",
                "model": "text-embedding-3-small",
                "dimensions": 512,
                "api_key_env": "OPENAI_API_KEY",
            },
        },
    }}

Options:

* ``url`` — base URL of the API, up to and including the version (``.../v1``); ``/embeddings`` is
  appended. Required.
* ``model`` — the served model name sent with every request. Required.
* ``dimensions`` — the vector size. Sent with each request (models trained for shorter vectors,
  such as OpenAI's ``text-embedding-3-*``, truncate to it) and checked against every answer.
  Without it the size is asked of the service once per process (one short request) and not
  sent; set it to keep ``embrec_status`` and web processes from calling the service.
* ``send_dimensions`` — send ``dimensions`` with requests (default True when ``dimensions`` is
  set). Set False for services that reject the field but whose size you want to state.
* ``api_key`` — the key itself (read it from the environment in settings.py, never commit it);
  or ``api_key_env`` — the name of an environment variable holding it, read when the encoder is
  created (default: ``EMBREC_EMBEDDINGS_API_KEY`` when set). Sent as ``Authorization: Bearer``.
  Self-hosted servers usually need none. The key is never logged nor put in error messages.
* ``headers`` — extra request headers (``{"OpenAI-Organization": "..."}``).
* ``batch_size`` — texts per request (default 64).
* ``concurrency`` — requests in flight at once from one process (default 4). One encoder object
  serves a process, so this bounds web searches and worker batches together.
* ``timeout`` — seconds per request (default 30).
* ``max_retries`` — retries of a request answered 429 or 5xx, or that timed out or could not
  connect (default 5). The wait doubles from ``backoff`` seconds (default 0.5) up to
  ``max_backoff`` (default 30), with jitter; a ``Retry-After`` header is honoured (up to
  ``max_backoff``).
* ``normalize`` — L2-normalise the vectors (default True).
* ``name`` — the model name stored in the vectors' identity (default: ``model``), and
  ``revision`` — a label stored with it (default ``"remote"``): change it when the service
  starts serving another version of the model under the same name, to re-embed everything.

Errors: a service that keeps answering 429/5xx, times out, cannot be reached or rejects the key
(401/403/404) raises :class:`~embrec.encoders.base.EncoderUnavailable`; the write path keeps the
outbox rows pending and the drain task retries later. Any other 4xx (an input the model rejects)
raises :class:`RemoteEncoderError`, and the write path isolates the items that cause it.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from embrec.encoders.base import BaseEncoder, EncoderIdentity, EncoderUnavailable, l2_normalize

logger = logging.getLogger("embrec")

#: Environment variable read for the API key when neither ``api_key`` nor ``api_key_env`` is set.
DEFAULT_KEY_ENV = "EMBREC_EMBEDDINGS_API_KEY"

#: Statuses worth retrying: rate limited, or the service failed or is overloaded.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
#: Statuses that no retry fixes but that say nothing about the items (configuration errors).
UNAVAILABLE_STATUSES = frozenset({401, 403, 404, 405})
_HINTS = {
    401: " (check the API key)",
    403: " (check the API key and its permissions)",
    404: " (check OPTIONS['url'] and OPTIONS['model'])",
    405: " (check OPTIONS['url'])",
}


class RemoteEncoderError(RuntimeError):
    """The service refused a request for a reason the retries cannot fix (e.g. a 400 for an
    input the model rejects, or an answer that is not a valid embeddings response)."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _positive(alias: str, options: dict, name: str, default, kind=int):
    value = options.get(name, default)
    try:
        value = kind(value)
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            f"Remote encoder {alias!r}: OPTIONS[{name!r}] must be a number, got {value!r}."
        ) from None
    if value <= 0 and not (name in {"max_retries", "backoff"} and value == 0):
        raise ImproperlyConfigured(
            f"Remote encoder {alias!r}: OPTIONS[{name!r}] must be positive, got {value!r}."
        )
    return value


class RemoteEmbeddingEncoder(BaseEncoder):
    """Embeds text with an OpenAI-compatible ``/embeddings`` endpoint (see the module docstring).

    Requests go out in batches of ``batch_size`` texts, at most ``concurrency`` at a time, each
    retried with exponential backoff on 429/5xx; vectors come back in the input order.
    """

    option_names = frozenset(
        {
            "url",
            "model",
            "dimensions",
            "send_dimensions",
            "api_key",
            "api_key_env",
            "headers",
            "batch_size",
            "concurrency",
            "timeout",
            "max_retries",
            "backoff",
            "max_backoff",
            "normalize",
            "name",
            "revision",
        }
    )

    def __init__(self, alias: str, **options):
        super().__init__(alias, **options)
        url = options.get("url")
        if not url or not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                f"Remote encoder {alias!r}: OPTIONS['url'] must be the http(s) base URL of an "
                "OpenAI-compatible API, e.g. 'https://api.openai.com/v1' (got "
                f"{url!r})."
            )
        self.endpoint = url.rstrip("/") + "/embeddings"
        model = options.get("model")
        if not model or not isinstance(model, str):
            raise ImproperlyConfigured(
                f"Remote encoder {alias!r}: OPTIONS['model'] must name the served model."
            )
        self.model = model
        dims = options.get("dimensions")
        self.declared_dimensions = (
            None if dims is None else _positive(alias, options, "dimensions", None)
        )
        self.send_dimensions = bool(
            options.get("send_dimensions", self.declared_dimensions is not None)
        )
        if self.send_dimensions and self.declared_dimensions is None:
            raise ImproperlyConfigured(
                f"Remote encoder {alias!r}: 'send_dimensions' needs OPTIONS['dimensions']."
            )
        self.batch_size = _positive(alias, options, "batch_size", 64)
        self.concurrency = _positive(alias, options, "concurrency", 4)
        self.timeout = _positive(alias, options, "timeout", 30.0, float)
        self.max_retries = _positive(alias, options, "max_retries", 5)
        self.backoff = _positive(alias, options, "backoff", 0.5, float)
        self.max_backoff = _positive(alias, options, "max_backoff", 30.0, float)
        headers = options.get("headers") or {}
        if not isinstance(headers, dict):
            raise ImproperlyConfigured(
                f"Remote encoder {alias!r}: OPTIONS['headers'] must be a dict."
            )
        self._api_key = self._read_key(alias, options)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "embrec",
            **{str(k): str(v) for k, v in headers.items()},
        }
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._probe_lock = threading.Lock()
        self._probed_dimensions: int | None = None

    @staticmethod
    def _read_key(alias: str, options: dict) -> str | None:
        key = options.get("api_key")
        if key is not None:
            if not isinstance(key, str) or not key.strip():
                raise ImproperlyConfigured(
                    f"Remote encoder {alias!r}: OPTIONS['api_key'] is empty; set the key or "
                    "remove the option."
                )
            return key.strip()
        env = options.get("api_key_env")
        if env is not None:
            value = os.environ.get(str(env), "").strip()
            if not value:
                raise ImproperlyConfigured(
                    f"Remote encoder {alias!r}: the environment variable {env!r} named by "
                    "OPTIONS['api_key_env'] is not set."
                )
            return value
        return os.environ.get(DEFAULT_KEY_ENV, "").strip() or None

    @property
    def has_api_key(self) -> bool:
        """Whether requests carry an ``Authorization`` header (the key itself is never shown)."""
        return self._api_key is not None

    # -- identity ----------------------------------------------------------------------------

    def get_identity(self) -> EncoderIdentity:
        dims = self.declared_dimensions or self._probe_dimensions()
        name = str(self.options.get("name") or self.model)
        revision = str(self.options.get("revision") or "remote")
        return EncoderIdentity(name, revision, dims, bool(self.options.get("normalize", True)))

    def _probe_dimensions(self) -> int:
        with self._probe_lock:
            if self._probed_dimensions is None:
                vectors = self._request(["dimensions"])
                self._probed_dimensions = len(vectors[0])
                logger.info(
                    "embrec: remote encoder %r: %s returns %d dimensions.",
                    self.alias,
                    self.model,
                    self._probed_dimensions,
                )
        return self._probed_dimensions

    # -- encoding ----------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        dims = self.dimensions
        batches = [
            list(texts[lo : lo + self.batch_size]) for lo in range(0, len(texts), self.batch_size)
        ]
        if len(batches) == 1 or self.concurrency == 1:
            results = [self._request(batch) for batch in batches]
        else:
            with ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(batches)),
                thread_name_prefix=f"embrec-remote-{self.alias}",
            ) as pool:
                results = list(pool.map(self._request, batches))
        vectors = np.concatenate(results, axis=0) if results else np.zeros((0, dims), np.float32)
        if vectors.shape[1] != dims:
            raise RemoteEncoderError(
                f"Remote encoder {self.alias!r}: {self.model} returned {vectors.shape[1]} "
                f"dimensions, expected {dims}."
            )
        if self.options.get("normalize", True):
            vectors = l2_normalize(vectors)
        return vectors

    def _request(self, texts: list[str]) -> np.ndarray:
        """One batch, with retries; returns a ``(len(texts), d)`` ``float32`` array."""
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"Remote encoder expects str, got {type(text).__name__}")
        payload: dict = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.send_dimensions:
            payload["dimensions"] = self.declared_dimensions
        body = json.dumps(payload).encode("utf-8")
        headers = dict(self._headers)
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempt = 0
        while True:
            vectors, problem, wait = self._attempt(body, headers, len(texts))
            if vectors is not None:
                return vectors
            if attempt >= self.max_retries:
                raise EncoderUnavailable(
                    f"Remote encoder {self.alias!r}: {problem} "
                    f"(gave up after {attempt + 1} attempt(s))."
                )
            if wait is not None:
                delay = min(self.max_backoff, wait)
            else:
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.5, 1)
            attempt += 1
            logger.warning(
                "embrec: remote encoder %r: %s; retry %d/%d in %.1f s.",
                self.alias,
                problem,
                attempt,
                self.max_retries,
                delay,
            )
            time.sleep(delay)

    def _attempt(
        self, body: bytes, headers: dict, count: int
    ) -> tuple[np.ndarray | None, str, float | None]:
        """One HTTP request: ``(vectors, "", None)``, or ``(None, problem, Retry-After seconds)``
        when it is worth retrying; raises when it is not."""
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        with self._slots:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                status, detail = exc.code, _error_detail(exc)
                if status in RETRY_STATUSES:
                    wait = parse_retry_after(exc.headers.get("Retry-After"))
                    return None, f"{self.endpoint} answered {status}{detail}", wait
                if status in UNAVAILABLE_STATUSES:
                    raise EncoderUnavailable(
                        f"Remote encoder {self.alias!r}: {self.endpoint} answered "
                        f"{status}{detail}{_HINTS[status]}."
                    ) from None
                raise RemoteEncoderError(
                    f"Remote encoder {self.alias!r}: {self.endpoint} answered {status}{detail}."
                ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                # refused, reset, timed out, cut short
                reason = getattr(exc, "reason", None) or exc
                return None, f"{self.endpoint} could not be reached ({reason})", None
        return self._parse(raw, count), "", None

    def _parse(self, raw: bytes, count: int) -> np.ndarray:
        try:
            data = json.loads(raw)["data"]
            ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
            vectors = np.asarray([item["embedding"] for item in ordered], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteEncoderError(
                f"Remote encoder {self.alias!r}: {self.endpoint} did not return an embeddings "
                f"response ({type(exc).__name__}: {exc})."
            ) from None
        if vectors.ndim != 2 or vectors.shape[0] != count:
            raise RemoteEncoderError(
                f"Remote encoder {self.alias!r}: asked for {count} vectors, got "
                f"{vectors.shape[0] if vectors.ndim else 0}."
            )
        return vectors


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """A short excerpt of an error answer's body (the service's own message)."""
    try:
        text = exc.read(500).decode("utf-8", "replace").strip()
    except Exception:  # the body is optional: never let reading it hide the status
        return ""
    if not text:
        return ""
    try:
        parsed = json.loads(text)
        message = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        if isinstance(message, dict):
            message = message.get("message") or message.get("detail") or message
        text = str(message)
    except ValueError:
        pass
    return f": {' '.join(text.split())[:300]}"
