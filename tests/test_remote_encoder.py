"""The remote embeddings encoder against a real OpenAI-compatible server (Infinity serving the
packaged MiniLM, a separate process), with a proxy in front of it for 429/5xx and timeouts."""

import json
import time
from io import StringIO

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings
from rest_framework.test import APIClient

from embrec import indexing
from embrec.conf import validate
from embrec.encoders import EncoderUnavailable, get_encoder
from embrec.encoders.remote import RemoteEmbeddingEncoder, RemoteEncoderError, parse_retry_after
from embrec.encoders.sentence_transformer import SentenceTransformerEncoder, default_model_path
from embrec.models import Embedding, OutboxEntry
from embrec.registry import registry
from tests.remote_server.server import SERVED_MODEL, FaultyProxy, InfinityServer
from tests.settings import EMBREC as TEST_EMBREC
from tests.testapp.models import Article

TEXTS = [
    "A robot pilots a starship through the galaxy.",
    "Two lovers meet again in Paris after the war.",
    "The detective finds the missing necklace in the garden.",
    "Quarterly revenue grew by twelve percent.",
    "",
    "Ünïcode — ünd émoji ✓",
    "a " * 200,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    infinity = InfinityServer(default_model_path(), tmp_path_factory.mktemp("infinity") / "log")
    infinity.start()
    yield infinity
    infinity.stop()


@pytest.fixture(scope="module")
def local_minilm():
    return SentenceTransformerEncoder("local-minilm", engine=False)


@pytest.fixture
def proxy(server):
    fronted = FaultyProxy(server.url)
    yield fronted
    fronted.close()


def remote(url, key, **options):
    return RemoteEmbeddingEncoder(
        "remote", url=url, model=SERVED_MODEL, api_key=key, backoff=0.05, **options
    )


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_vectors_match_the_local_minilm(server, local_minilm):
    encoder = remote(server.url, server.api_key)
    identity = encoder.identity  # dimensions asked of the server (none were configured)
    assert (identity.name, identity.dimensions, identity.normalized) == (SERVED_MODEL, 384, True)
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    local = local_minilm.encode(TEXTS)
    assert cosines(vectors, local).min() > 0.999
    # Order kept across batches and concurrent requests.
    batched = remote(server.url, server.api_key, batch_size=2, concurrency=3).encode(TEXTS)
    assert cosines(batched, local).min() > 0.999


def test_dimensions_are_sent_and_part_of_the_identity(server, local_minilm):
    encoder = remote(server.url, server.api_key, dimensions=128)
    assert encoder.identity.dimensions == 128
    assert encoder.identity != remote(server.url, server.api_key).identity
    vectors = encoder.encode(TEXTS[:3])
    assert vectors.shape == (3, 128)
    # The server truncates (Matryoshka style): the first 128 of MiniLM's dimensions.
    local = local_minilm.encode(TEXTS[:3])[:, :128]
    assert cosines(vectors, local).min() > 0.999
    # A size the service does not return is an error, not a silently wrong vector.
    stated = remote(server.url, server.api_key, dimensions=100, send_dimensions=False)
    with pytest.raises(RemoteEncoderError, match="returned 384 dimensions, expected 100"):
        stated.encode(["x"])


def test_api_key_from_the_environment_and_clear_errors(server, monkeypatch, caplog):
    monkeypatch.setenv("SITE_EMBEDDINGS_KEY", server.api_key)
    encoder = RemoteEmbeddingEncoder(
        "env", url=server.url, model=SERVED_MODEL, api_key_env="SITE_EMBEDDINGS_KEY"
    )
    assert encoder.encode(["hello"]).shape == (1, 384)
    monkeypatch.setenv("EMBREC_EMBEDDINGS_API_KEY", server.api_key)
    implicit = RemoteEmbeddingEncoder("implicit", url=server.url, model=SERVED_MODEL)
    assert implicit.has_api_key and implicit.encode(["hello"]).shape == (1, 384)

    # A wrong key: unavailable (no item is to blame), the key named nowhere.
    wrong = remote(server.url, "not-the-key", dimensions=384)
    with pytest.raises(EncoderUnavailable, match="401") as info:
        wrong.encode(["hello"])
    assert "check the API key" in str(info.value)
    monkeypatch.delenv("EMBREC_EMBEDDINGS_API_KEY")
    keyless = RemoteEmbeddingEncoder("keyless", url=server.url, model=SERVED_MODEL, dimensions=384)
    assert not keyless.has_api_key
    with pytest.raises(EncoderUnavailable, match="401"):
        keyless.encode(["hello"])
    assert server.api_key not in caplog.text and "not-the-key" not in caplog.text

    # Configuration errors are reported by `manage.py check`, before any request.
    monkeypatch.delenv("SITE_EMBEDDINGS_KEY")
    cls = "embrec.encoders.remote.RemoteEmbeddingEncoder"
    problems = validate(
        {
            "ENCODERS": {
                "no-url": {"CLASS": cls, "OPTIONS": {"model": SERVED_MODEL}},
                "no-model": {"CLASS": cls, "OPTIONS": {"url": server.url}},
                "no-key": {
                    "CLASS": cls,
                    "OPTIONS": {
                        "url": server.url,
                        "model": "m",
                        "api_key_env": "SITE_EMBEDDINGS_KEY",
                    },
                },
                "bad-batch": {
                    "CLASS": cls,
                    "OPTIONS": {"url": server.url, "model": "m", "batch_size": 0},
                },
                "typo": {
                    "CLASS": cls,
                    "OPTIONS": {"url": server.url, "model": "m", "batchsize": 8},
                },
            },
            "DEFAULT_ENCODERS": ["no-url"],
        }
    )
    assert len(problems) == 5

    def message(alias):
        return next(p.message for p in problems if f"[{alias!r}]" in p.message)

    assert "OPTIONS['url'] must be the http(s) base URL" in message("no-url")
    assert "OPTIONS['model'] must name" in message("no-model")
    assert "'SITE_EMBEDDINGS_KEY'" in message("no-key")
    assert "must be positive" in message("bad-batch")
    assert "batchsize" in message("typo")
    with pytest.raises(ImproperlyConfigured, match="not set"):
        RemoteEmbeddingEncoder("x", url=server.url, model="m", api_key_env="SITE_EMBEDDINGS_KEY")


def test_batches_and_the_concurrency_limit(server, proxy, local_minilm):
    proxy.delay = 0.3  # requests overlap when the client sends them at once
    texts = [f"text number {i} about trains" for i in range(23)]
    encoder = remote(proxy.url, server.api_key, dimensions=384, batch_size=5, concurrency=2)
    vectors = encoder.encode(texts)
    assert sorted(seen.inputs for seen in proxy.seen) == [3, 5, 5, 5, 5]
    assert all(seen.authorized for seen in proxy.seen)
    assert proxy.max_in_flight == 2
    assert cosines(vectors, local_minilm.encode(texts)).min() > 0.999

    proxy.seen.clear()
    proxy.max_in_flight = 0
    serial = remote(proxy.url, server.api_key, dimensions=384, batch_size=5, concurrency=1)
    assert np.allclose(serial.encode(texts), vectors, atol=1e-5)
    assert len(proxy.seen) == 5 and proxy.max_in_flight == 1


def test_retry_after_is_honoured_on_429(server, proxy):
    proxy.faults = [(429, {"Retry-After": "1"}), (429, {"Retry-After": "1"})]
    encoder = remote(proxy.url, server.api_key, dimensions=384, max_retries=3)
    started = time.monotonic()
    vectors = encoder.encode(["rate limited text"])
    elapsed = time.monotonic() - started
    assert vectors.shape == (1, 384)
    assert [seen.answered for seen in proxy.seen] == [429, 429, 200]
    assert elapsed >= 2.0  # two waits of Retry-After: 1 s, not the 0.05 s backoff
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 02 Dec 2026 10:00:05 GMT", now=1796205600.0) == 5.0
    assert parse_retry_after("soon") is None


def test_5xx_and_timeouts_are_retried_then_unavailable(server, proxy):
    proxy.faults = [(503, {}), (502, {})]
    encoder = remote(proxy.url, server.api_key, dimensions=384, max_retries=2)
    assert encoder.encode(["flaky"]).shape == (1, 384)
    assert [seen.answered for seen in proxy.seen] == [503, 502, 200]

    proxy.seen.clear()
    proxy.faults = [(500, {})] * 3
    with pytest.raises(EncoderUnavailable, match=r"answered 500.*gave up after 3 attempt"):
        encoder.encode(["down"])
    assert len(proxy.seen) == 3

    proxy.seen.clear()
    proxy.faults = [("stall", 3.0)]
    patient = remote(proxy.url, server.api_key, dimensions=384, timeout=1.0, max_retries=1)
    assert patient.encode(["slow once"]).shape == (1, 384)  # timed out once, then answered
    assert len(proxy.seen) == 2

    # A request the service rejects (4xx other than auth) is not retried: the items are to blame.
    proxy.seen.clear()
    proxy.faults = [(400, {})]
    with pytest.raises(RemoteEncoderError, match="answered 400: injected 400"):
        encoder.encode(["rejected"])
    assert len(proxy.seen) == 1


def test_intrinsic_evaluation_runs_on_the_remote_encoder(server, tmp_path, settings):
    """``embrec_evaluate --intrinsic --encoders remote``: the served MiniLM scores what the local
    MiniLM scores, beside GloVe."""
    settings.EMBREC = remote_settings(server.url, server.api_key)
    call_command(
        "embrec_evaluate",
        intrinsic=True,
        encoders=["remote"],
        json=str(tmp_path / "i.json"),
        stdout=StringIO(),
        stderr=StringIO(),
    )
    results = {r["encoder"]: r for r in json.loads((tmp_path / "i.json").read_text())["intrinsic"]}
    assert set(results) == {"glove-6b-50d", "all-MiniLM-L6-v2", "remote"}
    for task, score in results["all-MiniLM-L6-v2"]["scores"].items():
        assert results["remote"]["scores"][task] == pytest.approx(score, abs=0.005), task
    assert results["remote"]["coverage"] == results["all-MiniLM-L6-v2"]["coverage"]
    assert (
        results["remote"]["scores"]["wordsim353_spearman"]
        > results["glove-6b-50d"]["scores"]["wordsim353_spearman"]
    )


# ----------------------------------------------------------------------------- write path


def remote_settings(url, key):
    return {
        "ENCODERS": {
            **TEST_EMBREC["ENCODERS"],
            "remote": {
                "CLASS": "embrec.encoders.remote.RemoteEmbeddingEncoder",
                "OPTIONS": {
                    "url": url,
                    "model": SERVED_MODEL,
                    "dimensions": 384,
                    "api_key": key,
                    "max_retries": 1,
                    "backoff": 0.05,
                },
            },
        },
    }


@pytest.mark.django_db
def test_write_path_stores_remote_vectors_and_keeps_rows_while_the_service_is_down(
    server, proxy, local_minilm, monkeypatch
):
    monkeypatch.setattr(registry.get(Article), "encoders", ["remote"])
    with override_settings(EMBREC=remote_settings(proxy.url, server.api_key)):
        articles = [Article.objects.create(title=text) for text in TEXTS[:4]]
        result = indexing.drain()
        assert (result.encoded, result.failed) == (4, 0)
        ct = ContentType.objects.get_for_model(Article)
        stored = {
            e.object_pk: np.asarray(e.vector, dtype=np.float32)
            for e in Embedding.objects.filter(content_type=ct, encoder="remote")
        }
        local = local_minilm.encode([a.title for a in articles])
        for article, vector in zip(articles, local, strict=True):
            assert float(stored[str(article.pk)] @ vector) > 0.999
        assert Embedding.objects.filter(encoder="remote").first().identity == (
            get_encoder("remote").identity.as_string()
        )

        # The service goes down: the batch is rolled back, its rows stay pending, no attempt is
        # counted and nothing is marked failed, however many items the batch held.
        articles[3].title = "Quarterly revenue fell by three percent."
        articles[3].save()
        fresh = Article.objects.create(title="A new article")
        proxy.seen.clear()
        proxy.faults = [(503, {"Retry-After": "0"})] * 10
        with pytest.raises(EncoderUnavailable):
            indexing.drain()
        assert len(proxy.seen) == 2  # one request and its retry: no bisecting per item
        rows = list(OutboxEntry.objects.values_list("state", "attempts"))
        assert rows == [("pending", 0), ("pending", 0)]
        rec = registry.get(Article)
        assert indexing.status(rec, "remote")["pending"] == 2

        # Search answers 503 with Retry-After while the service is down, not a 500.
        response = APIClient().get(
            "/api/embrec/search/", {"q": "robots", "type": "testapp.article"}
        )
        assert response.status_code == 503 and response["Retry-After"]

        # Back up: the same rows are drained.
        proxy.faults = []
        result = indexing.drain()
        assert (result.encoded, result.failed) == (2, 0)
        assert OutboxEntry.objects.count() == 0
        assert Embedding.objects.filter(
            content_type=ct, encoder="remote", object_pk=str(fresh.pk)
        ).exists()
        response = APIClient().get(
            "/api/embrec/search/", {"q": "a robot in space", "type": "testapp.article"}
        )
        assert response.status_code == 200
        assert response.json()["results"][0]["pk"] == str(articles[0].pk)
