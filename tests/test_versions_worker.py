"""A model switch under load: a real Celery worker over Redis backfills a new model of the same
dimensions and switches the alias, while this process queries in a loop. Every answer must be
exactly the old model's or exactly the new model's, never a mix; the old one's until the switch,
the new one's after it."""

import json
import time

import pytest
from django.core.management import call_command
from django.test import override_settings

from embrec.encoders import get_encoder
from embrec.models import Embedding, EncoderVersion, OutboxEntry, UserEmbedding
from embrec.versions import live_identity, pending_version
from tests.test_versions import answers, assert_model_answers, live_setup, salted
from tests.worker import flush_broker, redis_available, start_worker, stop_worker, use_broker

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ARTICLES = 200


def test_queries_during_a_backfill_and_switch_by_a_real_worker_never_mix_models(tmp_path):
    assert redis_available(), "Redis must run on 127.0.0.1:6379 (.ci/run starts it)"
    flush_broker()
    articles, user = live_setup(ARTICLES)
    old_encoder = get_encoder("hashing")
    old_identity = old_encoder.identity.as_string()
    old = answers(articles, user)
    assert_model_answers(old, old_encoder, articles, articles[7])

    # The worker runs the new model, slowly (small batches, a pause per encode), so that the
    # backfill spans many of this process's queries.
    worker_settings = salted(BATCH_SIZE=8)
    worker_settings["ENCODERS"]["hashing"]["OPTIONS"]["sleep"] = 0.1
    overrides = {k: worker_settings[k] for k in ("ENCODERS", "BATCH_SIZE")}
    log = tmp_path / "worker.log"
    worker = start_worker(logfile=log, extra_env={"EMBREC_TEST_OVERRIDES": json.dumps(overrides)})
    records = []
    try:
        # This process is deployed with the new settings too: search text must still be
        # encoded with the live (old) model until the switch.
        with override_settings(EMBREC=salted(AUTO_KICK=True)), use_broker():
            new_encoder = get_encoder("hashing")
            new_identity = new_encoder.identity.as_string()
            call_command("embrec_reindex", "testapp.article", verbosity=0)
            assert pending_version("hashing").identity == new_identity
            deadline = time.monotonic() + 180
            after_switch = 0
            while after_switch < 5:
                assert time.monotonic() < deadline, "the worker did not switch in time"
                before = live_identity("hashing")
                backfilled = Embedding.objects.filter(identity=new_identity).count()
                got = answers(articles, user)
                after = live_identity("hashing")
                records.append((before, after, backfilled, got))
                if before == new_identity:
                    after_switch += 1
    finally:
        stop_worker(worker)
        print(log.read_text()[-3000:])

    new = records[-1][3]
    print(f"{len(records)} rounds of queries")
    assert_model_answers(new, new_encoder, articles, articles[7])
    assert all(new[kind] != old[kind] for kind in old)
    during = [r for r in records if r[0] == r[1] == old_identity and 0 < r[2] < ARTICLES]
    assert len(during) >= 3, f"the queries must overlap the backfill ({len(records)} rounds)"
    for before, after, _, got in records:
        for kind, answer in got.items():
            assert answer in (old[kind], new[kind]), (kind, answer, before, after)
        if before == after == old_identity:
            assert got == old
        if before == after == new_identity:
            assert got == new
    assert OutboxEntry.objects.count() == 0
    retired = EncoderVersion.objects.get(alias="hashing", identity=old_identity)
    assert retired.state == EncoderVersion.RETIRED
    switched = EncoderVersion.objects.get(alias="hashing", state=EncoderVersion.LIVE)
    assert switched.identity == new_identity
    # The user's vector of the new model was written before the flip.
    stored = UserEmbedding.objects.get(user=user, identity=new_identity)
    assert stored.updated_at <= switched.live_since
