"""``manage.py demo``: load MovieLens-100k, embed the movies, and serve the demo site.

Steps (each safe to re-run; unchanged rows are neither duplicated nor re-embedded):

1. apply migrations;
2. fetch the ``recbole==1.2.1`` wheel (cached under ``.embrec/cache``) and load its 1,682 movies,
   943 users and 100,000 ratings (as embrec interactions);
3. train the encoders learned from interactions (``als`` with the demo settings, about a second)
   — only when the ratings changed or no model exists yet; a new model queues the movies for
   re-embedding under every encoder built on it (``adaptive``);
4. embed every new or changed movie with the registration's encoders (``adaptive`` and MiniLM
   with the demo settings);
5. build every user's vector (from their latest ratings) so recommendations are personal at once;
6. create the demo superuser ``admin`` / ``admin``;
7. start the Celery processes (an encoding worker on its own queue, a worker for user-vector
   refreshes and periodic tasks, beat) and serve http://127.0.0.1:8000 (static files included,
   with ``DEBUG`` off). Ctrl-C or SIGTERM stops them all, and the embedded server with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from embrec import indexing
from embrec.conf import embrec_settings
from embrec.encoders import get_encoder
from embrec.encoders.trained import dependent_aliases, trained_aliases
from embrec.interactions import rebuild_user_vectors
from embrec.models import Embedding, Interaction, UserEmbedding
from embrec.registry import registry
from embrec.training import train_and_reindex
from project.catalog.models import Movie
from project.catalog.movielens import MovieLensUnavailable, load_ml100k

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"
USER_PREFIX = "ml"

#: The encoding worker touches this file once its models are loaded (see project/celery.py).
READY_FILE_ENV = "EMBREC_DEMO_READY_FILE"
#: Seconds the demo waits for that before serving anyway.
WORKER_READY_TIMEOUT = 300

#: MovieLens star ratings as interaction kinds (weights in settings.EMBREC).
RATING_KINDS = {5: "love", 4: "like", 3: "view", 2: "dislike", 1: "dislike"}


class Command(BaseCommand):
    help = "Load MovieLens-100k, embed the movies, and serve the demo site with a worker."

    def add_arguments(self, parser):
        parser.add_argument("--source", help="Path to a recbole wheel (default: download it).")
        parser.add_argument("--addrport", default="127.0.0.1:8000", help="Where to serve.")
        parser.add_argument(
            "--no-serve", action="store_true", help="Load and embed, then exit (no server)."
        )
        parser.add_argument(
            "--no-worker", action="store_true", help="Serve without starting a Celery worker."
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=20.0,
            help="Seconds to let the workers finish on exit before killing them (default 20).",
        )

    def handle(self, *args, **options):
        verbosity = options["verbosity"]
        call_command("migrate", interactive=False, verbosity=0)
        try:
            data = load_ml100k(options["source"])
        except MovieLensUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.log(
            f"MovieLens-100k: {len(data.movies)} movies, {len(data.users)} users, "
            f"{len(data.ratings)} ratings"
        )
        changed = self.load_movies(data.movies)
        self.log(f"Movies: {changed} new or changed")
        users = self.load_users(data.users)
        added = self.load_ratings(data.ratings, users)
        self.log(f"Interactions: {added} loaded" if added else "Interactions: up to date")
        self.train_item2vec(retrain=bool(added))
        encoded = self.embed(verbosity)
        self.refresh_user_vectors(rebuild=bool(added or encoded))
        self.ensure_superuser()
        if options["no_serve"]:
            return
        self.serve(
            options["addrport"],
            start_worker=not options["no_worker"],
            stop_timeout=options["stop_timeout"],
        )

    def log(self, message: str) -> None:
        self.stdout.write(message)

    # -- loading -----------------------------------------------------------------------------

    def load_movies(self, movies: list[dict]) -> int:
        """Insert new movies and update changed ones; returns how many changed."""
        existing = {m.movielens_id: m for m in Movie.objects.all()}
        to_create, to_update = [], []
        for row in movies:
            movie = existing.get(row["movielens_id"])
            if movie is None:
                to_create.append(Movie(**row))
                continue
            if (movie.title, movie.year, movie.genres) != (
                row["title"],
                row["year"],
                row["genres"],
            ):
                movie.title, movie.year, movie.genres = row["title"], row["year"], row["genres"]
                to_update.append(movie)
        with transaction.atomic():
            created = Movie.objects.bulk_create(to_create, batch_size=1000)
            Movie.objects.bulk_update(to_update, ["title", "year", "genres"], batch_size=1000)
            # bulk_create/bulk_update skip signals: queue the changed movies explicitly.
            if created or to_update:
                indexing.mark_dirty([*created, *to_update])
        return len(to_create) + len(to_update)

    def load_users(self, users: list[dict]) -> dict[int, int]:
        User = get_user_model()
        names = {u["user_id"]: f"{USER_PREFIX}{u['user_id']}" for u in users}
        have = set(
            User.objects.filter(username__in=names.values()).values_list("username", flat=True)
        )
        new = [User(username=name) for name in names.values() if name not in have]
        for user in new:
            user.set_unusable_password()
        User.objects.bulk_create(new, batch_size=1000)
        by_name = dict(
            User.objects.filter(username__in=names.values()).values_list("username", "id")
        )
        return {ml_id: by_name[name] for ml_id, name in names.items()}

    def load_ratings(self, ratings, users: dict[int, int]) -> int:
        """Load ratings as interactions unless exactly these are already loaded."""
        ct = ContentType.objects.get_for_model(Movie)
        demo = Interaction.objects.filter(content_type=ct, user_id__in=users.values())
        if demo.count() == len(ratings):
            return 0
        movie_pks = dict(Movie.objects.values_list("movielens_id", "pk"))
        weights = settings.EMBREC.get("INTERACTION_WEIGHTS", {})
        rows = []
        for user_id, item_id, rating, ts in ratings:
            kind = RATING_KINDS[int(rating)]
            rows.append(
                Interaction(
                    user_id=users[user_id],
                    content_type=ct,
                    object_pk=str(movie_pks[item_id]),
                    kind=kind,
                    weight=float(weights.get(kind, rating)),
                    created_at=datetime.fromtimestamp(ts, tz=UTC),
                )
            )
        with transaction.atomic():
            demo.delete()
            Interaction.objects.bulk_create(rows, batch_size=5000)
        return len(rows)

    # -- embedding ---------------------------------------------------------------------------

    def train_item2vec(self, retrain: bool) -> None:
        """Train each configured encoder learned from interactions (ALS, item2vec) when the
        ratings changed or it has no model."""

        for alias in trained_aliases():
            encoder = get_encoder(alias)
            if encoder.is_trained and not retrain:
                self.log(f"{alias}: up to date (revision {encoder.identity.revision})")
                continue
            started = time.monotonic()
            summary = train_and_reindex(alias, reindex=False)
            if summary["revision"] != summary["previous_revision"]:
                # Queue without kicking a worker task: embed() drains them in this process.
                aliases = dependent_aliases(alias)
                for rec in registry.all():
                    for name in rec.get_encoders():
                        if name in aliases:
                            summary["queued"] += indexing.reindex(rec, encoder=name, kick=False)
            self.log(
                f"{alias}: trained revision {summary['revision']} on {summary['interactions']} "
                f"ratings of {summary['sequences']} users in {time.monotonic() - started:.1f}s; "
                f"{summary['queued']} vectors queued"
            )

    def embed(self, verbosity: int) -> int:
        rec = registry.get(Movie)
        started = time.monotonic()
        result = indexing.drain()
        stale = self._stale_encoders(rec)
        if stale:
            # Vectors missing, or made by another configuration of an encoder (edited settings):
            # recompute them under the current one.
            for alias in stale:
                indexing.reindex(rec, encoder=alias, kick=False)
            result.merge(indexing.drain())
        self.log(
            f"Embeddings: {result.encoded} computed, {result.unchanged} unchanged, "
            f"{result.failed} failed in {time.monotonic() - started:.1f}s"
        )
        return result.encoded

    def _stale_encoders(self, rec) -> list[str]:
        """Aliases with fewer current vectors (the encoder's present identity) than movies."""

        ct = ContentType.objects.get_for_model(Movie)
        expected = rec.get_queryset().count()
        stale = []
        for alias in rec.get_encoders():
            identity = get_encoder(alias).identity.as_string()
            current = Embedding.objects.filter(
                content_type=ct, encoder=alias, identity=identity
            ).count()
            if current < expected:
                stale.append(alias)
        return stale

    def refresh_user_vectors(self, rebuild: bool) -> None:
        """Rebuild every user's vectors when ratings or movie vectors changed (or none exist)."""

        ct = ContentType.objects.get_for_model(Movie)
        stored = UserEmbedding.objects.filter(content_type=ct)
        if not rebuild and stored.exists() and not stored.filter(is_stale=True).exists():
            self.log("User vectors: up to date")
            return
        started = time.monotonic()
        count = rebuild_user_vectors(Movie)
        self.log(f"User vectors: {count} built in {time.monotonic() - started:.1f}s")

    def ensure_superuser(self) -> None:
        User = get_user_model()
        if not User.objects.filter(username=DEMO_USERNAME).exists():
            User.objects.create_superuser(DEMO_USERNAME, "admin@example.com", DEMO_PASSWORD)
        self.log("Site: http://127.0.0.1:8000/ (search, movies, browse as a MovieLens user)")
        self.log(
            f"Admin: http://127.0.0.1:8000/admin/ (user {DEMO_USERNAME!r}, password {DEMO_PASSWORD!r})"
        )

    # -- serving -----------------------------------------------------------------------------

    def serve(self, addrport: str, start_worker: bool, stop_timeout: float = 20.0) -> None:
        children = Children(stop_timeout=stop_timeout, log=self.log)
        # `kill <pid>` (SIGTERM) ends the demo like Ctrl-C does, so the workers are stopped too.
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            if start_worker:
                self.start_workers(children)
            self.log(
                "API: http://127.0.0.1:8000/api/embrec/items/catalog.movie/1/similar/ · "
                "docs: http://127.0.0.1:8000/api/docs/"
            )
            # --insecure: serve the admin's and API docs' static files with DEBUG off (the demo
            # has no web server in front; a real site uses collectstatic and its web server).
            call_command("runserver", addrport, use_reloader=False, insecure_serving=True)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                children.stop()
            finally:
                signal.signal(signal.SIGTERM, previous)
        # This process's registration with the embedded server is released at exit; the children
        # are reaped above, so the last one out (normally this process) stops the server.

    def start_workers(self, children: Children) -> None:
        """Start the Celery processes and wait until the encoding worker has loaded its models,
        so that the first edit in the admin is re-embedded at once, not after a model load."""
        ready = Path(settings.BASE_DIR) / ".embrec" / f"encode-worker-ready-{os.getpid()}"
        ready.unlink(missing_ok=True)
        started = time.monotonic()
        for name, command in worker_commands():
            env = {**os.environ, READY_FILE_ENV: str(ready)} if name == "encoding worker" else None
            children.start(name, command, env=env)
        self.log(
            f"Workers: encoding on {encode_queue()!r} (its own process, so an edit is "
            f"re-embedded at once), other tasks on {', '.join(other_queues())}; beat for the "
            "sweeper. Loading the models…"
        )
        encoder = children.procs[0][1]
        try:
            while not ready.exists():
                if encoder.poll() is not None:
                    raise CommandError(
                        f"The encoding worker exited (code {encoder.returncode}) while starting."
                    )
                if time.monotonic() - started > WORKER_READY_TIMEOUT:
                    self.log("Workers: still loading; serving anyway")
                    return
                time.sleep(0.2)
        finally:
            ready.unlink(missing_ok=True)
        self.log(f"Workers: ready in {time.monotonic() - started:.1f}s")


def encode_queue() -> str:
    """The queue of the outbox drain task: its task route, else ``EMBREC["QUEUE"]``."""
    routes = getattr(settings, "CELERY_TASK_ROUTES", None) or {}
    route = routes.get("embrec.drain") if isinstance(routes, dict) else None
    if route and route.get("queue"):
        return route["queue"]
    return embrec_settings.QUEUE


def other_queues() -> list[str]:
    """Every other routed queue, then Celery's default queue (beat's sweeper, training)."""
    routes = getattr(settings, "CELERY_TASK_ROUTES", None) or {}
    queues = []
    if isinstance(routes, dict):
        for route in routes.values():
            queue = route.get("queue") if isinstance(route, dict) else None
            if queue and queue != encode_queue() and queue not in queues:
                queues.append(queue)
    if encode_queue() != embrec_settings.QUEUE and embrec_settings.QUEUE not in queues:
        queues.append(embrec_settings.QUEUE)
    return [*queues, "celery"]


def worker_commands() -> list[tuple[str, list[str]]]:
    """The demo's Celery processes: an encoding worker on its own queue, a worker for the other
    tasks, and beat (its own process: a killed worker cannot orphan it)."""
    celery = [sys.executable, "-m", "celery", "-A", "project"]
    common = ["--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]
    schedule = Path(settings.BASE_DIR) / ".embrec" / "celerybeat-schedule"
    return [
        ("encoding worker", [*celery, "worker", "-Q", encode_queue(), "-n", "encode@%h", *common]),
        ("worker", [*celery, "worker", "-Q", ",".join(other_queues()), "-n", "tasks@%h", *common]),
        ("beat", [*celery, "beat", "--schedule", str(schedule), "--loglevel", "WARNING"]),
    ]


class Children:
    """Child processes the demo starts and stops: each in its own process group (Ctrl-C in the
    terminal reaches only the demo, which stops them in order), each told by the kernel to stop
    if the demo dies, even by SIGKILL (``PR_SET_PDEATHSIG``)."""

    def __init__(self, *, stop_timeout: float, log):
        self.stop_timeout = stop_timeout
        self.log = log
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        """SIGTERM every child's process group, SIGKILL what is left after the timeout, and reap
        them all (a killed child left unreaped would still count as a client of the embedded
        server, which then would never stop)."""
        for _name, proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{name} did not stop within {self.stop_timeout:g}s: killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # The group may hold more (a pool's processes): none of them may outlive the demo.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _die_with_parent(parent: int):
    """A ``preexec_fn``: in the child on Linux, get SIGTERM when the demo process dies."""
    try:
        # Loaded here, in the parent: the child between fork and exec should only make calls.
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not Linux: the demo still stops its children on Ctrl-C / SIGTERM
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the demo died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
