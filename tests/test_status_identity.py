"""Encoder identity without loading the model, so ``embrec_status`` stays light."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from embrec.encoders.sentence_transformer import (
    SentenceTransformerEncoder,
    default_model_path,
    folder_dimensions,
)
from embrec.models import Embedding
from project.catalog.models import Movie
from tests.worker import ROOT


def write_module(folder, modules, configs):
    (folder / "modules.json").write_text(json.dumps(modules))
    for path, config in configs.items():
        (folder / path).mkdir(exist_ok=True)
        (folder / path / "config.json").write_text(json.dumps(config))


def test_folder_dimensions_of_the_packaged_minilm():
    assert folder_dimensions(default_model_path()) == 384


def test_folder_dimensions_follow_pooling_modes_and_dense_layers(tmp_path):
    transformer = {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"}
    pooling = {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    dense = {"idx": 2, "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    pool_config = {
        "word_embedding_dimension": 32,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_cls_token": True,
    }
    write_module(
        tmp_path, [transformer, pooling], {"": {"hidden_size": 32}, "1_Pooling": pool_config}
    )
    assert folder_dimensions(str(tmp_path)) == 64
    write_module(tmp_path, [transformer, pooling, dense], {"2_Dense": {"out_features": 16}})
    assert folder_dimensions(str(tmp_path)) == 16
    # A module the reader does not know: the encoder falls back to loading the model.
    custom = {"idx": 3, "path": "3_X", "type": "my_package.Projection"}
    write_module(tmp_path, [transformer, pooling, dense, custom], {"3_X": {}})
    assert folder_dimensions(str(tmp_path)) is None
    assert folder_dimensions(str(tmp_path / "missing")) is None


def test_identity_from_configuration_matches_the_loaded_model():
    light = SentenceTransformerEncoder("default")
    identity = light.identity
    assert light._model is None, "the identity must not load the model"
    loaded = SentenceTransformerEncoder("default")
    model = loaded.load_model()
    get_dims = (
        getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    )
    assert identity.dimensions == get_dims()
    assert identity.as_string() == f"all-MiniLM-L6-v2@{identity.revision}/384/norm"
    assert loaded.encode(["a film"]).shape == (1, identity.dimensions)


@pytest.mark.django_db(transaction=True)
def test_embrec_status_answers_without_importing_torch():
    movies = Movie.objects.bulk_create(
        Movie(movielens_id=i, title=f"movie {i}", genres="Drama") for i in range(3)
    )
    ct = ContentType.objects.get_for_model(Movie)
    current = SentenceTransformerEncoder("default").identity.as_string()
    for movie, identity in zip(movies, [current, current, "old-model@1/384/norm"], strict=True):
        Embedding.objects.create(
            content_type=ct,
            object_pk=str(movie.pk),
            encoder="default",
            identity=identity,
            dimensions=384,
            vector=np.ones(384, dtype=np.float32) / np.sqrt(384),
            content_hash="x",
        )
    script = (
        "import json, sys, time, django; django.setup();"
        "from io import StringIO;"
        "from django.core.management import call_command;"
        "t = time.monotonic(); out = StringIO();"
        "call_command('embrec_status', 'catalog.movie', '--json', stdout=out);"
        "print(json.dumps({'rows': json.loads(out.getvalue()), 'torch': 'torch' in sys.modules,"
        " 'st': 'sentence_transformers' in sys.modules, 'seconds': time.monotonic() - t}))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "EMBREC_DATABASE_NAME": connection.settings_dict["NAME"],
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False and result["st"] is False
    (row,) = result["rows"]
    assert (row["encoder"], row["objects"], row["embedded"], row["stale"]) == ("default", 3, 3, 1)
    # Generous on a shared machine; loading torch and the model took 10+ s here.
    assert result["seconds"] < 3, f"embrec_status took {result['seconds']:.1f}s"
