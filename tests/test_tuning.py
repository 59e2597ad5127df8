"""``manage.py embrec_tune`` writes a tuned configuration that the read path then uses."""

import json
import random
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

import embrec
from embrec import tuning
from embrec.conf import embrec_settings
from embrec.interactions import record_interaction
from tests.readpath import make_catalog
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db


def make_site(seed=5, users=40):
    """Articles of four categories; each reader stays in one category and, like real readers,
    mostly picks its few popular articles (a skewed choice), so popularity helps ranking."""
    rng = random.Random(seed)
    articles = make_catalog(per_category=20)
    by_category = {}
    for a in articles:
        by_category.setdefault(a.category, []).append(a)
    weights = [1 / (n + 1) ** 1.5 for n in range(20)]
    start = timezone.now() - timedelta(days=20)
    readers = []
    for n in range(users):
        user = get_user_model().objects.create(username=f"tuner{n}")
        readers.append(user)
        pool = by_category[list(by_category)[n % 4]]
        chosen = []
        while len(chosen) < 7:
            pick = rng.choices(pool, weights=weights)[0]
            if pick not in chosen:
                chosen.append(pick)
        rng.shuffle(chosen)  # popular articles are read at any time, not first
        for t, article in enumerate(chosen):
            record_interaction(user, article, "view", at=start + timedelta(hours=n + t * 30))
    return readers


def test_embrec_tune_writes_a_config_the_read_path_then_uses(settings, tmp_path):
    path = tmp_path / "tuned" / "tuned.json"
    settings.EMBREC = {
        **settings.EMBREC,
        "TUNED_CONFIG": str(path),
        "POPULARITY_WINDOW_DAYS": None,
        "EF_SEARCH": 400,
    }
    readers = make_site()
    user = readers[0]
    assert embrec_settings.RECOMMEND_POPULARITY == 0.0  # the default: not tuned yet
    before = [
        (r.pk, round(r.score, 6))
        for r in embrec.recommend(user, model=Article, limit=10, explain=False)
    ]
    out = StringIO()
    call_command(
        "embrec_tune",
        "testapp.article",
        holdout=1,
        validation=2,
        k=10,
        grid=json.dumps({"last": [3], "popularity": [0.0, 0.3], "popular_pool": [200]}),
        baselines=["popularity"],
        bootstrap=100,
        stdout=out,
        stderr=StringIO(),
    )
    config = json.loads(path.read_text())
    report = json.loads((path.parent / "tuned.report.json").read_text())
    assert config["report"] == "tuned.report.json" and config["encoder"] == "hashing"
    (result,) = [r for r in report["protocols"]["leave-last"]["results"] if r["name"] == "hashing"]
    searched = {s["params"]["popularity"]: s["ndcg@10"] for s in result["searched"]}
    assert set(searched) == {0.0, 0.3}
    best = max(searched, key=lambda p: (searched[p], -p))
    # The popularity blend helps on this site, and the validation search found it.
    assert best == 0.3, searched
    assert config["settings"]["RECOMMEND_POPULARITY"] == best
    assert config["settings"]["USER_VECTOR_MAX_INTERACTIONS"] == 3
    assert config["settings"]["RERANK_POPULAR_CANDIDATES"] == 200
    assert "Tuned configuration written to" in out.getvalue()

    # The read path now blends popularity without being told to...
    assert embrec_settings.RECOMMEND_POPULARITY == 0.3
    assert embrec_settings.USER_VECTOR_MAX_INTERACTIONS == 3
    after = [
        (r.pk, round(r.score, 6))
        for r in embrec.recommend(user, model=Article, limit=10, explain=False)
    ]
    assert after != before
    explicit = [
        (r.pk, round(r.score, 6))
        for r in embrec.recommend(user, model=Article, limit=10, popularity=0.3, explain=False)
    ]
    assert after == explicit
    # ...unless the site sets the key itself: explicit settings win.
    settings.EMBREC = {**settings.EMBREC, "RECOMMEND_POPULARITY": 0.1}
    assert embrec_settings.RECOMMEND_POPULARITY == 0.1
    assert embrec_settings.USER_VECTOR_MAX_INTERACTIONS == 3


def test_tuned_config_validation_and_command_errors(settings, tmp_path):
    path = tmp_path / "t.json"
    settings.EMBREC = {**settings.EMBREC, "TUNED_CONFIG": str(path)}
    assert tuning.tuned_settings(str(path)) == {}  # not tuned yet
    tuning.write(path, {"settings": {"RECOMMEND_POPULARITY": 0.3}})
    assert embrec_settings.RECOMMEND_POPULARITY == 0.3
    # The file is re-read when it changes.
    tuning.write(path, {"settings": {"RECOMMEND_POPULARITY": 0.4}})
    assert embrec_settings.RECOMMEND_POPULARITY == 0.4
    with pytest.raises(ImproperlyConfigured, match="RECOMMEND_POPULARITY"):
        tuning.write(path, {"settings": {"RECOMMEND_POPULARITY": 1.5}})
    path.write_text(json.dumps({"version": 1, "settings": {"EF_SEARCH": 10}}))
    with pytest.raises(ImproperlyConfigured, match="EF_SEARCH"):
        getattr(embrec_settings, "RECOMMEND_POPULARITY")  # noqa: B009
    path.write_text("{not json")
    with pytest.raises(ImproperlyConfigured, match="TUNED_CONFIG"):
        getattr(embrec_settings, "RECOMMEND_POPULARITY")  # noqa: B009

    settings.EMBREC = {**settings.EMBREC, "TUNED_CONFIG": None}
    with pytest.raises(CommandError, match="TUNED_CONFIG"):
        call_command("embrec_tune", "testapp.article", stdout=StringIO())
    with pytest.raises(CommandError, match="--grid must map"):
        call_command("embrec_tune", "testapp.article", output=str(path), grid='{"magic": [1]}')
    with pytest.raises(CommandError, match="No interactions"):
        call_command("embrec_tune", "testapp.article", output=str(path), stdout=StringIO())


def test_tuned_config_setting_is_validated():
    from embrec.conf import validate

    assert not [p for p in validate({"TUNED_CONFIG": "/tmp/tuned.json"}) if "TUNED" in str(p)]
    problems = [p for p in validate({"TUNED_CONFIG": 5}) if "TUNED_CONFIG" in str(p)]
    assert len(problems) == 1
