"""The encoding engine gives the same vectors as ``SentenceTransformer.encode``, in order."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from embrec.encoders.engine import EncodingEngine, UnsupportedModel, is_out_of_memory
from embrec.encoders.sentence_transformer import SentenceTransformerEncoder, default_model_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = [
    "",
    "a",
    "   padded with spaces   ",
    "The Matrix (1999). Genres: Action, Sci-Fi.",
    "Crème brûlée, naïve café — Ünïcödé ✓ 日本語のテキスト 🚀",
    "word " * 600,  # longer than the model's 256-token limit: truncated the same way
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "UPPER case and lower CASE",
    "\n\ttabs and newlines\n",
] + [f"item number {i} " + "lorem ipsum dolor " * (i % 17) for i in range(60)]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def minilm():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(default_model_path(), device="cpu")


@pytest.fixture(scope="module")
def reference(minilm):
    return minilm.encode(TEXTS, batch_size=16, normalize_embeddings=True)


def test_matches_sentence_transformers_in_order(minilm, reference):
    # Small budgets and chunks: many batches, several chunks, sorting across them.
    engine = EncodingEngine(minilm, max_tokens=512, chunk_size=25)
    vectors = engine.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert cosine_rows(vectors, reference).min() >= 0.999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Order: a permutation of the input gives the same permutation of the rows.
    perm = np.random.default_rng(0).permutation(len(TEXTS))
    permuted = engine.encode([TEXTS[i] for i in perm])
    assert cosine_rows(permuted, reference[perm]).min() >= 0.999


def test_stream_yields_chunks_in_order(minilm, reference):
    engine = EncodingEngine(minilm, max_tokens=2048)
    parts = list(engine.encode_stream(iter(TEXTS), chunk_size=20))
    assert [len(p) for p in parts] == [20, 20, 20, 9]
    assert cosine_rows(np.concatenate(parts), reference).min() >= 0.999


def test_stream_stops_cleanly_when_abandoned(minilm):
    engine = EncodingEngine(minilm)
    stream = engine.encode_stream((f"text {i}" for i in range(10_000)), chunk_size=8)
    first = next(stream)
    # The same thread may encode while its stream is suspended (no self-deadlock).
    assert engine.encode(["meanwhile"]).shape == (1, 384)
    stream.close()  # the tokenizer thread must exit, and the engine stays usable
    assert first.shape == (8, 384)
    assert engine.encode(["again"]).shape == (1, 384)


def test_bfloat16_matches_float32(minilm, reference):
    engine = EncodingEngine(minilm, dtype="bfloat16")
    assert engine.transformer is not minilm[0].auto_model  # the shared model is left in fp32
    assert next(minilm[0].auto_model.parameters()).dtype == torch.float32
    vectors = engine.encode(TEXTS[:12])
    assert cosine_rows(vectors, reference[:12]).min() >= 0.999


def test_out_of_memory_splits_the_batch(minilm, reference, monkeypatch):
    engine = EncodingEngine(minilm, max_tokens=100_000, max_batch_size=64)
    real_forward = engine._forward
    seen = []

    def forward(input_ids, mask):
        seen.append(input_ids.shape[0])
        if input_ids.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(input_ids, mask)

    monkeypatch.setattr(engine, "_forward", forward)
    vectors = engine.encode(TEXTS)
    assert cosine_rows(vectors, reference).min() >= 0.999
    assert engine.oom_splits > 0
    assert engine.max_tokens < 100_000  # later batches are cut before they are tried
    assert max(seen) == 64 and seen.count(64) == 1


def test_out_of_memory_on_one_text_raises(minilm, monkeypatch):
    engine = EncodingEngine(minilm)

    def forward(input_ids, mask):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(engine, "_forward", forward)
    with pytest.raises(torch.OutOfMemoryError):
        engine.encode(["one text"])
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_other_errors_propagate(minilm):
    engine = EncodingEngine(minilm)
    with pytest.raises(TypeError):
        engine.encode(["fine", 42])


def _tiny_bert(tmp_path, pooling: str):
    """A random 2-layer BERT on the MiniLM vocabulary, built offline."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(tmp_path)
    transformer = Transformer(str(tmp_path), max_seq_length=64)
    return SentenceTransformer(
        modules=[transformer, Pooling(32, pooling_mode=pooling)], device="cpu"
    )


def test_cls_pooling_on_a_tiny_model(tmp_path):
    model = _tiny_bert(tmp_path, "cls")
    expected = model.encode(TEXTS, batch_size=8)
    # float32 pinned: the magnitude check below is a float32 property (auto may pick bfloat16).
    engine = EncodingEngine(model, max_tokens=256, dtype="float32")
    assert engine.pooling == "cls" and not engine.normalize
    vectors = engine.encode(TEXTS)
    assert cosine_rows(vectors, expected).min() >= 0.999
    assert np.allclose(vectors, expected, atol=1e-4)  # unnormalised: magnitudes match too


def test_unsupported_pooling_falls_back_to_encode(tmp_path):
    model = _tiny_bert(tmp_path, "max")
    with pytest.raises(UnsupportedModel):
        EncodingEngine(model)
    encoder = SentenceTransformerEncoder("tiny", model=str(tmp_path), device="cpu")
    encoder._model = model
    assert encoder.load_engine() is None
    assert cosine_rows(encoder.encode(TEXTS[:5]), model.encode(TEXTS[:5])).min() >= 0.999


def test_encoder_uses_the_engine_by_default(minilm, reference):
    fast = SentenceTransformerEncoder("default", device="cpu")
    fast._model = minilm
    plain = SentenceTransformerEncoder("plain", device="cpu", engine=False)
    plain._model = minilm
    assert fast.load_engine() is not None and plain.load_engine() is None
    assert cosine_rows(fast.encode(TEXTS), reference).min() >= 0.999
    assert cosine_rows(plain.encode(TEXTS[:4]), reference[:4]).min() >= 0.9999
    streamed = np.concatenate(list(fast.encode_stream(iter(TEXTS), chunk_size=30)))
    assert cosine_rows(streamed, reference).min() >= 0.999


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "avx2-only"])
def test_auto_dtype_follows_the_hardware(native, monkeypatch):
    from embrec.encoders import engine as engine_module
    from embrec.encoders.engine import resolve_dtype

    monkeypatch.setattr(engine_module, "cpu_has_native_bfloat16", lambda: native)
    cpu = resolve_dtype("auto", torch.device("cpu"))
    assert cpu == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32  # explicit wins
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int4", torch.device("cpu"))


def test_auto_dtype_on_this_machine_gives_the_same_vectors(minilm, reference):
    """Whatever ``auto`` picks on the machine running the tests, vectors match ``encode``."""
    from embrec.encoders.engine import cpu_has_native_bfloat16

    engine = EncodingEngine(minilm)
    assert engine.dtype == (torch.bfloat16 if cpu_has_native_bfloat16() else torch.float32)
    assert cosine_rows(engine.encode(TEXTS), reference).min() >= 0.999
