"""A fresh project built from the README's "Add embrec to your project" and "Testing your
project" snippets alone: ``startproject``, one app with one model, the README's settings, Celery
app, registration, URLs and wsgi preload; then ``check``, ``migrate``, ``embrec_reindex --sync``
(MiniLM), ``embrec_status``, the similar endpoint from a web process, the README's worker
embedding a save, and a pytest run inside that project (``embrec.testing``). A step missing from
the README fails here."""

import os
import re
import subprocess
import sys
import uuid

import psycopg
import pytest
from django.db import connection

from tests.worker import REDIS_URL, ROOT, flush_broker, redis_available, stop_worker, wait_for

README = (ROOT / "README.md").read_text()
TUTORIAL = README.split("## Add embrec to your project\n", 1)[1].split("\n## ", 1)[0]
TESTING = README.split("## Testing your project\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str = "python") -> list[str]:
    """The fenced code blocks of ``language`` in ``text``, dedented to column 0."""
    found = re.findall(rf"^( *)```{language}\n(.*?)^\1```", text, re.S | re.M)
    return [
        "\n".join(line[len(indent) :] for line in body.splitlines()) + "\n"
        for indent, body in found
    ]


def block(text: str, first_line: str) -> str:
    (code,) = [b for b in blocks(text) if b.startswith(first_line)]
    return code


def placeholder(code: str, lines: str) -> str:
    """Fill the snippets' ``# …`` (what the project already has) with ``lines``."""
    assert "    # …\n" in code, code
    return code.replace("    # …\n", lines, 1)


MODELS = """
from django.db import models


class Brand(models.Model):
    slug = models.SlugField(unique=True)


class Product(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=50, blank=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    brand = models.ForeignKey(Brand, null=True, blank=True, on_delete=models.SET_NULL)
    active = models.BooleanField(default=True)

    def __str__(self):
        return self.name
"""

# The README's test, completed (its objects, the endpoint), in the project's tests.
PROJECT_TEST = """
from shop.models import Product

{readme_test}

def test_similar_endpoint(embrec_sync, client):
    lamp = Product.objects.create(name="Brass desk lamp", category="lighting")
    light = Product.objects.create(name="Brass floor lamp", category="lighting")
    hose = Product.objects.create(name="Garden hose", category="garden")
    Product.objects.create(name="Hidden brass lamp", active=False)
    assert embrec_sync.embed_now().encoded == 3
    response = client.get(f"/api/embrec/items/shop.product/{{lamp.pk}}/similar/")
    assert response.status_code == 200, response.content
    pks = [r["pk"] for r in response.json()["results"]]
    assert pks[0] == str(light.pk) and str(lamp.pk) not in pks
    # No serializer_class in the registration: objects are rendered as type, pk and str().
    assert response.json()["results"][0]["object"]["type"] == "shop.product"
    filtered = client.get(f"/api/embrec/items/shop.product/{{lamp.pk}}/similar/?category=garden")
    assert filtered.status_code == 200, filtered.content
    assert [r["pk"] for r in filtered.json()["results"]] == [str(hose.pk)]
    assert client.get("/api/schema/").status_code == 200
"""


CREATE_PRODUCTS = """
from shop.models import Product
Product.objects.create(name="Brass desk lamp", description="A lamp for the desk")
Product.objects.create(name="Brass floor lamp", description="A lamp for the living room")
Product.objects.create(name="Garden hose", description="Twenty metres of green hose")
"""

SERVE = """
from django.test import Client
from django.test.utils import setup_test_environment
import shopsite.wsgi
from shop.models import Product
setup_test_environment()
lamp = Product.objects.get(name="Brass desk lamp")
response = Client().get(f"/api/embrec/items/shop.product/{lamp.pk}/similar/?limit=1")
assert response.status_code == 200, response.content
print("similar:", response.json()["results"][0]["object"]["label"])
"""


SAVE_ONE = """
from shop.models import Product
Product.objects.create(name="Brass table lamp", description="A lamp for the table")
"""


def server_connection(dbname: str) -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(
        dbname=dbname,
        user=s["USER"],
        password=s["PASSWORD"],
        host=s["HOST"],
        port=s["PORT"],
        autocommit=True,
    )


def embedded(dbname: str) -> int:
    with server_connection(dbname) as conn:
        return conn.execute("SELECT count(*) FROM embrec_embedding").fetchone()[0]


@pytest.fixture
def database_name():
    """A fresh database name on the test run's server (the project's own and its test_ copy are
    dropped afterwards)."""
    name = f"embrec_tutorial_{uuid.uuid4().hex[:8]}"
    yield name
    with server_connection("postgres") as conn:
        for db in (name, f"test_{name}"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def run(args, cwd, env, timeout=120) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_the_readme_tutorial_builds_a_working_project(tmp_path, database_name):
    s = connection.settings_dict
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        # The README's database_settings(BASE_DIR): no DATABASE_URL, so the embedded server;
        # this checkout's (already running) with a database of the project's own.
        "EMBREC_PGDATA": str(ROOT / ".embrec"),
        "EMBREC_DATABASE_NAME": database_name,
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DATABASE_URL", None)
    env.pop("EMBREC_TEST_DB_NAME", None)
    if s["HOST"] == "127.0.0.1":
        env["EMBREC_PG_PORT"] = str(s["PORT"])
    python = sys.executable
    admin = [python, "-m", "django"]
    run([*admin, "startproject", "shopsite", "."], tmp_path, env)
    manage = [python, "manage.py"]
    run([*manage, "startapp", "shop"], tmp_path, env)
    (tmp_path / "shop" / "models.py").write_text(MODELS)

    # Step 2: settings (the snippet's "# …" is what startproject wrote, plus the app).
    settings = tmp_path / "shopsite" / "settings.py"
    text = settings.read_text()
    (default_apps,) = re.findall(r"INSTALLED_APPS = \[\n(.*?)\]", text, re.S)
    snippet = placeholder(block(TUTORIAL, "INSTALLED_APPS = ["), default_apps + '    "shop",\n')
    # The README's broker, on the Redis database of this test run.
    assert 'CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"' in snippet
    snippet = snippet.replace("redis://127.0.0.1:6379/0", REDIS_URL)
    settings.write_text(text + "\n" + snippet)
    # Step 3: the Celery app.
    celery_py = block(TUTORIAL, "# yourproject/celery.py").replace("yourproject", "shopsite")
    (tmp_path / "shopsite" / "celery.py").write_text(celery_py)
    init_py = block(TUTORIAL, "# yourproject/__init__.py")
    (tmp_path / "shopsite" / "__init__.py").write_text(init_py)
    # Step 4: the registration, as printed.
    (tmp_path / "shop" / "recommendables.py").write_text(block(TUTORIAL, "import embrec\n"))
    # Step 5: URLs (the snippet's "# …" is the admin startproject routes).
    urls = placeholder(
        block(TUTORIAL, "from django.urls import include, path"),
        '    path("admin/", admin.site.urls),\n',
    )
    (tmp_path / "shopsite" / "urls.py").write_text("from django.contrib import admin\n" + urls)

    # Step 6: the preload lines at the end of wsgi.py (the snippet's "…" is startproject's file).
    wsgi_lines = block(TUTORIAL, "# yourproject/wsgi.py").splitlines()
    wsgi = tmp_path / "shopsite" / "wsgi.py"
    assert "application = get_wsgi_application()" in wsgi.read_text()
    extra = [line for line in wsgi_lines[1:] if line.strip() not in {"…", ""}]
    assert extra[-1].startswith("embrec.preload_encoders()"), extra
    extra = [line for line in extra if not line.startswith("application =")]
    wsgi.write_text(wsgi.read_text() + "\n" + "\n".join(extra) + "\n")

    check = run([*manage, "check"], tmp_path, env)
    assert "System check identified no issues" in check.stdout, check.stdout + check.stderr
    run([*manage, "makemigrations", "shop"], tmp_path, env)
    # Step 7, as printed (the worker and the MiniLM reindex are other tests' business).
    commands = [
        line.split("#")[0].split()
        for line in blocks(TUTORIAL, "bash")[-1].splitlines()
        if line.startswith("python manage.py")
    ]
    assert commands[0] == ["python", "manage.py", "migrate"]
    run([python, *commands[0][1:]], tmp_path, env)
    run([*manage, "shell", "-c", CREATE_PRODUCTS], tmp_path, env)
    # Embed what exists, in this process (the README's MiniLM encoder), as step 7 prints it.
    assert commands[1][:4] == ["python", "manage.py", "embrec_reindex", "shop.Product"]
    assert "--sync" in blocks(TUTORIAL, "bash")[-1]
    run([python, *commands[1][1:], "--sync"], tmp_path, env, timeout=240)
    assert commands[-1] == ["python", "manage.py", "embrec_status"]
    status = run([python, *commands[-1][1:]], tmp_path, env)
    assert "shop.product" in status.stdout.lower(), status.stdout
    # A web process: wsgi.py preloads the model; the endpoint answers with the neighbour.
    served = run([*manage, "shell", "-c", SERVE], tmp_path, env, timeout=240)
    assert "similar: Brass floor lamp" in served.stdout, served.stdout + served.stderr

    # The worker, as step 7 starts it: a save reaches it through the outbox and the broker.
    (worker_line,) = [
        line for line in blocks(TUTORIAL, "bash")[-1].splitlines() if line.startswith("celery ")
    ]
    assert redis_available(), REDIS_URL
    flush_broker()
    worker_args = worker_line.replace("yourproject", "shopsite").split()[1:]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [python, "-m", "celery", *worker_args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        run([*manage, "shell", "-c", SAVE_ONE], tmp_path, env)
        wait_for(
            lambda: worker.poll() is not None or embedded(database_name) == 4,
            timeout=180,
            message="the worker embeds the saved product",
        )
        assert worker.poll() is None, log.read_text()
    finally:
        stop_worker(worker)
    text = log.read_text()
    assert "celery@" in text and "embrec" in text, text  # its banner and queue
    assert "No hostname was supplied" not in text, text

    # "Testing your project": the conftest line and the README's first test, as printed.
    (tmp_path / "conftest.py").write_text(block(TESTING, "# conftest.py"))
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = shopsite.settings\npython_files = test_*.py\n"
    )
    readme_test = block(TESTING, "import embrec\n").split("\ndef test_import", 1)[0]
    (tmp_path / "shop" / "test_readme.py").write_text(PROJECT_TEST.format(readme_test=readme_test))
    done = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "shop/test_readme.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
