"""Encoders: loading by alias, identities, the hashing encoder and the GloVe static encoder."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from embrec.encoders import get_encoder, reset_encoders
from embrec.encoders.base import EncoderIdentity
from embrec.encoders.hashing import HashingEncoder
from embrec.encoders.static import StaticWordEncoder, default_vectors_path
from tests.settings import EMBREC as TEST_EMBREC


def encoders_setting(**encoders):
    return {"ENCODERS": {**TEST_EMBREC["ENCODERS"], **encoders}}


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_get_encoder_loads_once_per_process_and_resets_on_settings_change():
    reset_encoders()
    first = get_encoder("hashing")
    assert get_encoder("hashing") is first
    with override_settings(
        EMBREC=encoders_setting(
            hashing={
                "CLASS": "embrec.encoders.hashing.HashingEncoder",
                "OPTIONS": {"dimensions": 8},
            }
        )
    ):
        other = get_encoder("hashing")
        assert other is not first
        assert other.dimensions == 8
    assert get_encoder("hashing").dimensions == 64


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"CLASS": "no.such.Encoder"}, "cannot be imported"),
        ({"CLASS": "collections.OrderedDict"}, "must be a BaseEncoder subclass"),
        ({"OPTIONS": {}}, "must be a dict with a 'CLASS'"),
    ],
)
def test_misconfigured_encoders_raise_improperly_configured(config, message):
    with override_settings(EMBREC=encoders_setting(bad=config)):
        with pytest.raises(ImproperlyConfigured, match=message):
            get_encoder("bad")


def test_unknown_alias_names_the_configured_ones():
    with pytest.raises(ImproperlyConfigured, match=r"Unknown encoder alias 'nope'.*hashing"):
        get_encoder("nope")


def test_identity_string_holds_name_revision_dimensions_and_normalisation():
    identity = EncoderIdentity("m", "r1", 12, True)
    assert identity.as_string() == "m@r1/12/norm"
    assert EncoderIdentity("m", "r1", 12, False).as_string() != identity.as_string()
    assert EncoderIdentity("m", "r2", 12, True).as_string() != identity.as_string()


def test_hashing_encoder_is_deterministic_normalised_and_word_sensitive():
    encoder = HashingEncoder("h", dimensions=32)
    vectors = encoder.encode(["red apple pie", "red apple pie", "green apple tart", "bus"])
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[0], vectors[1])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert cosine(vectors[0], vectors[2]) > cosine(vectors[0], vectors[3])
    assert encoder.identity.as_string() == "hashing@1+bigrams/32/norm"
    assert HashingEncoder("h", dimensions=32, bigrams=False).identity != encoder.identity
    assert encoder.encode([]).shape == (0, 32)


def test_encode_rejects_wrong_shapes_from_a_subclass():
    class Broken(HashingEncoder):
        def encode_texts(self, texts):
            return np.zeros((len(texts) + 1, self.dimensions))

    with pytest.raises(ValueError, match="returned shape"):
        Broken("broken").encode(["a"])


# -- GloVe -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glove():
    return StaticWordEncoder("glove")


def test_glove_identity(glove):
    identity = glove.identity
    assert identity.name == "glove-6b-50d"
    assert identity.dimensions == 50
    assert identity.normalized is True
    revised = StaticWordEncoder("glove", revision="v2").identity
    assert revised.revision == "v2" and revised != identity


def test_glove_vector_is_the_normalised_mean_of_the_packaged_word_vectors(glove):
    folder = Path(default_vectors_path())
    matrix = np.load(folder / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(folder / "glove_6B_index.parquet").column(0).to_pylist()
    row = {w: i for i, w in reversed(list(enumerate(words)))}
    expected = np.mean([matrix[row["king"]], matrix[row["queen"]]], axis=0)
    expected /= np.linalg.norm(expected)
    # Case and unknown words do not matter; the vocabulary is lower-cased.
    vector = glove.encode(["King QUEEN qwzxqwzx"])[0]
    np.testing.assert_allclose(vector, expected, rtol=1e-5, atol=1e-6)


def test_glove_neighbours_make_sense(glove):
    royal, royal2, finance = glove.encode(
        ["the king and his queen", "a prince and a princess", "stock market prices fell"]
    )
    assert cosine(royal, royal2) > cosine(royal, finance) + 0.1


def test_glove_text_without_known_words_is_the_zero_vector(glove):
    vector = glove.encode(["qwzxqwzx zzvvqq"])[0]
    assert not vector.any()


def test_glove_unnormalised_option(glove):
    raw = StaticWordEncoder("raw", normalize=False)
    vector = raw.encode(["king queen"])[0]
    assert abs(np.linalg.norm(vector) - 1.0) > 0.01
    assert raw.identity.as_string() != glove.identity.as_string()


def test_glove_bad_path_is_a_configuration_error(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="does not exist"):
        StaticWordEncoder("g", path=str(tmp_path / "missing")).encode(["x"])
    with pytest.raises(ImproperlyConfigured, match=r"exactly one \*_emb.npy"):
        StaticWordEncoder("g", path=str(tmp_path)).encode(["x"])


def test_glove_accepts_another_table_in_the_same_layout(tmp_path):
    import pyarrow as pa

    np.save(tmp_path / "tiny_emb.npy", np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32))
    pq.write_table(pa.table({"index": ["cat", "dog", "pet"]}), tmp_path / "tiny_index.parquet")
    encoder = StaticWordEncoder("tiny", path=str(tmp_path), normalize=False)
    assert encoder.identity.name == tmp_path.name and encoder.dimensions == 2
    np.testing.assert_allclose(encoder.encode(["Cat dog", "pet"]), [[0.5, 0.5], [1, 1]])
