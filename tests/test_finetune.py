"""Fine-tuned text encoder: pair mining, training that pulls co-consumed items together (a tiny
random-weight BERT on the MiniLM tokenizer, built here), the revisioned model on disk, vectors
stored in pgvector after training, the command's errors, and the leak-free evaluation source."""

import random
import shutil
from datetime import timedelta
from io import StringIO

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from embrec import tasks
from embrec.encoders import get_encoder
from embrec.encoders.finetune import (
    UNTRAINED,
    FinetunedEncoder,
    fit_pairs,
    load_sentence_transformer,
    mine_pairs,
    pair_batches,
    validate_params,
)
from embrec.encoders.sentence_transformer import default_model_path
from embrec.evaluation.methods import FinetunedItemVectors
from embrec.evaluation.site import content_vectors
from embrec.evaluation.split import InteractionLog, Split
from embrec.models import Embedding, Interaction
from embrec.registry import registry
from embrec.storage import parse_vector
from embrec.switching import drain_and_switch
from embrec.versions import live_identity
from tests.testapp.models import Article


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """Random static token embeddings (32-d) on MiniLM's tokenizer, mean of tokens, normalised:
    a sentence-transformers model that trains in seconds."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    model = SentenceTransformer(
        modules=[StaticEmbedding(tokenizer, embedding_dim=32), Normalize()], device="cpu"
    )
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model.save(str(folder), create_model_card=False)
    return str(folder)


def vocabulary():
    """Whole words of the tokenizer's vocabulary (one token each), in a fixed order."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(default_model_path()).get_vocab()
    words = sorted((i, w) for w, i in vocab.items() if w.isalpha() and len(w) > 4)
    return [w for _, w in words[500:700]]


def planted_catalog(groups=8, per_group=4):
    """Item texts of two words each (no word shared between items); a group's items are
    consumed together."""
    words = vocabulary()
    texts = {}
    for g in range(groups):
        for i in range(per_group):
            n = 2 * (g * per_group + i)
            texts[f"{g}-{i}"] = f"{words[n]} {words[n + 1]}"
    return texts


def group_sequences(keys, groups, users, seed=2):
    rng = random.Random(seed)
    sequences = []
    for _ in range(users):
        group = rng.randrange(groups)
        items = [k for k in keys if k.startswith(f"{group}-")]
        rng.shuffle(items)
        sequences.append(items)
    return sequences


def cosine(model, a, b):
    va = model.encode(a, normalize_embeddings=True)
    vb = model.encode(b, normalize_embeddings=True)
    return np.sum(va * vb, axis=1)


def test_mine_pairs_counts_users_caps_items_and_orders():
    sequences = [
        ["a", "b", "c", "d"],
        ["b", "a", "a", "c"],  # repeats keep their first position
        ["a", "b", "x"],
    ]
    pairs = mine_pairs(sequences, window=1, max_pairs=10, max_pairs_per_item=10)
    assert pairs[0] == ("a", "b", 3)
    assert ("b", "c", 1) in pairs and ("a", "c", 1) in pairs
    assert all(a < b for a, b, _ in pairs)
    assert not any({"a", "d"} == {a, b} for a, b, _ in pairs)  # three apart with window 1
    # The per-item cap keeps a popular item from taking every pair.
    capped = mine_pairs([["hub", x] for x in "pqrstu"], window=1, max_pairs_per_item=2)
    assert len(capped) == 2 and all("hub" in pair for pair in capped)
    assert mine_pairs(sequences, window=2, min_count=2) == [
        ("a", "b", 3),
        ("a", "c", 2),
        ("b", "c", 2),
    ]
    assert len(mine_pairs(sequences, window=3, max_pairs=2)) == 2


def test_pair_batches_never_repeat_an_item_in_a_batch():
    pairs = [("hub", f"x{i}") for i in range(6)] + [(f"y{i}", f"z{i}") for i in range(20)]
    batches = pair_batches(pairs, 8, random.Random(1))
    for batch in batches:
        items = [t for pair in batch for t in pair]
        assert len(items) == len(set(items)) and len(batch) <= 8
    kept = [pair for batch in batches for pair in batch]
    # Only pairs of the item repeated everywhere can be left over (without a batch partner).
    assert len(kept) == len(set(kept)) >= 20
    assert all(pair[0] == "hub" for pair in set(pairs) - set(kept))
    assert batches == pair_batches(pairs, 8, random.Random(1))  # seeded


def test_validate_params_rejects_bad_values():
    assert validate_params({"epochs": "2"})["epochs"] == 2
    for bad in ({"epochs": 0}, {"learning_rate": -1}, {"train_batch_size": 1}, {"window": "x"}):
        with pytest.raises(ValueError):
            validate_params(bad)
    with pytest.raises(ImproperlyConfigured, match="unknown fine-tuning option"):
        FinetunedEncoder("x", epoch=3)
    with pytest.raises(ImproperlyConfigured, match="base_model"):
        FinetunedEncoder("x", model="/some/path")


def test_fine_tuning_pulls_co_consumed_items_together(tiny_model):
    texts = planted_catalog()
    keys = sorted(texts)
    mined = mine_pairs(group_sequences(keys, 8, 60), window=4, max_pairs_per_item=10)
    assert len(mined) == 8 * 6 and all(a[0] == b[0] for a, b, _ in mined)
    pairs = [(texts[a], texts[b]) for a, b, _ in mined]
    same = [(a, b) for a in keys for b in keys if a < b and a[0] == b[0]]
    other = [(a, b) for a in keys for b in keys if a < b and a[0] != b[0]]

    model = load_sentence_transformer(tiny_model)
    before_same = cosine(model, [texts[a] for a, _ in same], [texts[b] for _, b in same]).mean()
    before_other = cosine(model, [texts[a] for a, _ in other], [texts[b] for _, b in other]).mean()
    params = {"learning_rate": 0.1, "epochs": 4, "train_batch_size": 4, "warmup_ratio": 0.0}
    stats = fit_pairs(model, pairs, params, device="cpu")
    after_same = cosine(model, [texts[a] for a, _ in same], [texts[b] for _, b in same]).mean()
    after_other = cosine(model, [texts[a] for a, _ in other], [texts[b] for _, b in other]).mean()

    assert stats.steps > 0 and stats.pairs_per_second > 0
    assert after_same > before_same + 0.3, (before_same, after_same)
    assert after_same - after_other > before_same - before_other + 0.3

    # Deterministic: the same pairs, parameters and seed give the same weights.
    again = load_sentence_transformer(tiny_model)
    fit_pairs(again, pairs, params, device="cpu")
    probe = [texts[k] for k in keys[:4]]
    assert np.allclose(model.encode(probe), again.encode(probe), atol=1e-5)


# ----------------------------------------------------------------------------- through the DB


@pytest.fixture
def tuned(settings, tmp_path, monkeypatch, tiny_model):
    encoders = dict(settings.EMBREC["ENCODERS"])
    encoders["tuned"] = {
        "CLASS": "embrec.encoders.finetune.FinetunedEncoder",
        "OPTIONS": {
            "base_model": tiny_model,
            "model_dir": str(tmp_path / "models"),
            "learning_rate": 0.1,
            "epochs": 8,
            "train_batch_size": 4,
            "warmup_ratio": 0.0,
            "window": 3,
        },
    }
    settings.EMBREC = {**settings.EMBREC, "ENCODERS": encoders, "AUTO_KICK": False}
    monkeypatch.setattr(registry.get(Article), "encoders", ["hashing", "tuned"])
    return tmp_path / "models" / "tuned"


def make_catalog():
    texts = planted_catalog(groups=6, per_group=3)
    return {key: Article.objects.create(title=text, body="") for key, text in texts.items()}


def consume(articles, users, start, seed=4):
    rng = random.Random(seed)
    ct = ContentType.objects.get_for_model(Article)
    rows = []
    for n, user in enumerate(users):
        group = [a for key, a in articles.items() if key.startswith(f"{n % 6}-")]
        rng.shuffle(group)
        for t, article in enumerate(group):
            rows.append(
                Interaction(
                    user=user,
                    content_type=ct,
                    object_pk=str(article.pk),
                    kind="view",
                    weight=1.0,
                    created_at=start + timedelta(minutes=10 * n + t),
                )
            )
    Interaction.objects.bulk_create(rows)


def stored(alias):
    ct = ContentType.objects.get_for_model(Article)
    rows = Embedding.objects.filter(content_type=ct, encoder=alias)
    if live_identity(alias):  # the vectors queries read
        rows = rows.filter(identity=live_identity(alias))
    return {pk: (identity, parse_vector(v)) for pk, identity, v in rows.values_list(
        "object_pk", "identity", "vector"
    )}  # fmt: skip


def group_margin(articles, vectors):
    keys = sorted(articles)
    same, other = [], []
    for a in keys:
        for b in keys:
            if a < b:
                va = vectors[str(articles[a].pk)][1]
                vb = vectors[str(articles[b].pk)][1]
                (same if a[0] == b[0] else other).append(float(va @ vb))
    return np.mean(same) - np.mean(other)


@pytest.mark.django_db
def test_finetune_command_retrains_and_vectors_are_restored(tuned):
    articles = make_catalog()
    User = get_user_model()
    consume(articles, [User.objects.create(username=f"ft{n}") for n in range(30)], timezone.now())
    drain_and_switch()
    encoder = get_encoder("tuned")
    assert encoder.revision == UNTRAINED
    before = stored("tuned")
    assert len(before) == 18 and {i for i, _ in before.values()} == {encoder.identity.as_string()}

    out = StringIO()
    call_command("embrec_finetune", "tuned", stdout=out)
    assert "18 objects queued for re-embedding" in out.getvalue(), out.getvalue()
    revision = encoder.revision
    assert revision != UNTRAINED and (tuned / revision / "embrec_training.json").exists()
    assert (tuned / "current.json").exists()
    drain_and_switch()
    after = stored("tuned")
    identity = encoder.identity.as_string()
    assert revision in identity and {i for i, _ in after.values()} == {identity}
    # Stored (pgvector) vectors of co-consumed articles moved closer than before training.
    assert group_margin(articles, after) > group_margin(articles, before) + 0.2

    # Same interactions and parameters: same revision, nothing to do.
    out = StringIO()
    call_command("embrec_finetune", "tuned", stdout=out)
    assert "nothing to do" in out.getvalue()

    # Another parameter is another revision; through the Celery task this time.
    summary = tasks.finetune.apply(args=["tuned"], kwargs={"params": {"epochs": 5}}).get()
    assert summary["revision"] not in (revision, UNTRAINED) and summary["queued"] == 18
    assert summary["previous_revision"] == revision
    drain_and_switch()
    assert {i for i, _ in stored("tuned").values()} == {get_encoder("tuned").identity.as_string()}
    # A new article is embedded from its text alone by the current fine-tune.
    new = Article.objects.create(title=" ".join(vocabulary()[100:103]), body="")
    drain_and_switch()
    assert str(new.pk) in stored("tuned")
    # Old revisions are pruned to keep_revisions (2).
    assert len([p for p in tuned.iterdir() if p.is_dir()]) == 2


@pytest.mark.django_db
def test_finetune_command_errors(tuned):
    with pytest.raises(CommandError, match="Unknown encoder alias 'nope'"):
        call_command("embrec_finetune", "nope")
    with pytest.raises(CommandError, match="not a fine-tuned text encoder"):
        call_command("embrec_finetune", "hashing")
    with pytest.raises(CommandError, match="no positive interactions"):
        call_command("embrec_finetune", "tuned", stdout=StringIO())
    with pytest.raises(CommandError, match="epochs must be at least 1"):
        call_command("embrec_finetune", "tuned", "--epochs", "0")
    with pytest.raises(CommandError, match="--batch-size must be at least 2"):
        call_command("embrec_finetune", "tuned", "--batch-size", "1")
    with pytest.raises(CommandError, match="--learning-rate"):
        call_command("embrec_finetune", "tuned", "--learning-rate", "-0.1")
    # Interactions, but every user consumed a single item: no pairs.
    articles = make_catalog()
    ct = ContentType.objects.get_for_model(Article)
    User = get_user_model()
    for n, article in enumerate(list(articles.values())[:3]):
        Interaction.objects.create(
            user=User.objects.create(username=f"one{n}"),
            content_type=ct,
            object_pk=str(article.pk),
            kind="view",
            weight=1.0,
        )
    with pytest.raises(CommandError, match="no co-consumed item pairs"):
        call_command("embrec_finetune", "tuned", stdout=StringIO())


@pytest.mark.django_db
def test_evaluation_fine_tunes_on_the_training_split_only(tuned):
    articles = make_catalog()
    User = get_user_model()
    consume(articles, [User.objects.create(username=f"ev{n}") for n in range(30)], timezone.now())
    rec = registry.get(Article)
    keys = [str(a.pk) for a in articles.values()]
    cold = {str(articles[f"{g}-0"].pk) for g in range(6)}
    records = Interaction.objects.values_list("user_id", "object_pk", "created_at", "weight")
    log = InteractionLog.from_records(records, catalog=keys)
    is_cold = np.array([key in cold for key in log.items])
    split = Split(
        train=log.subset(~is_cold[log.item_index]),
        test_users=np.array([], dtype=np.int32),
        test_items=[],
        holdout=0,
    )
    source = content_vectors(rec, "tuned", log.items)
    assert isinstance(source, FinetunedItemVectors)  # never the stored, fully trained vectors
    seen = []
    source_texts = source.texts
    source.texts = lambda items: seen.append(list(items)) or source_texts(items)
    matrix, mask = source.vectors(split)
    assert mask.all() and matrix.shape == (18, 32)  # cold items get vectors from their text
    # Trained on warm pairs only: 6 groups of 2 warm items, one pair each.
    assert source.stats.pairs == 6 and source.stats.steps > 0
    assert source.vectors(split)[0] is matrix  # cached per split
    # Nothing was stored or made current for the site.
    assert get_encoder("tuned").revision == UNTRAINED
    assert not tuned.exists()


@pytest.mark.slow
def test_real_minilm_fine_tunes_a_few_steps():
    texts = planted_catalog(groups=4, per_group=3)
    keys = sorted(texts)
    pairs = [(texts[a], texts[b]) for a in keys for b in keys if a < b and a[0] == b[0]]
    model = load_sentence_transformer(default_model_path())
    before = cosine(model, [a for a, _ in pairs], [b for _, b in pairs]).mean()
    stats = fit_pairs(
        model, pairs, {"learning_rate": 1e-4, "epochs": 3, "train_batch_size": 4}, device="cpu"
    )
    after = cosine(model, [a for a, _ in pairs], [b for _, b in pairs]).mean()
    assert stats.steps >= 3 and after > before


def test_other_processes_follow_the_current_revision(tiny_model, tmp_path):
    options = {"base_model": tiny_model, "model_dir": str(tmp_path), "train_batch_size": 4}
    trainer = FinetunedEncoder("shared", **options)
    worker = FinetunedEncoder("shared", **options)  # another process's instance
    texts = planted_catalog(groups=4, per_group=3)
    before = worker.encode([texts["0-0"]])
    untrained = worker.identity
    assert untrained.revision == UNTRAINED and untrained.name == "finetuned-model"
    pairs = [(texts[f"{g}-0"], texts[f"{g}-1"]) for g in range(4)]
    result = trainer.train_on_texts(pairs, {"learning_rate": 0.1, "epochs": 3})
    assert result.trained and result.revision != UNTRAINED and result.pairs_per_second > 0
    # The worker sees current.json change: new identity, new weights.
    assert worker.identity.revision == result.revision
    assert worker.identity.dimensions == untrained.dimensions == 32
    assert not np.allclose(worker.encode([texts["0-0"]]), before)
    assert np.allclose(worker.encode([texts["0-0"]]), trainer.encode([texts["0-0"]]), atol=1e-6)
    # Same pairs and parameters: nothing to do; a missing model folder is a clear error.
    assert not trainer.train_on_texts(pairs, {"learning_rate": 0.1, "epochs": 3}).trained
    shutil.rmtree(tmp_path / "shared" / result.revision)
    (tmp_path / "shared" / "current.json").touch()
    with pytest.raises(ImproperlyConfigured, match="folder is missing"):
        FinetunedEncoder("shared", **options).encode(["text"])
