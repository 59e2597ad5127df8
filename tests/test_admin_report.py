"""Admin: the evaluation report page (the report ``embrec_tune`` writes beside the tuned
configuration)."""

import json
import re
import shutil

import pytest
from django.contrib.auth.models import Permission, User
from django.test import override_settings

from embrec.conf import embrec_settings
from tests.settings import EMBREC as TEST_EMBREC
from tests.settings import TEST_BASE_DIR

pytestmark = pytest.mark.django_db

URL = "/admin/embrec/embedding/evaluation-report/"
DEMO_REPORT = TEST_BASE_DIR / "project" / "tuned.report.json"
DEMO_CONFIG = TEST_BASE_DIR / "project" / "tuned.json"


@pytest.fixture
def tuned_at(tmp_path):
    """Point EMBREC["TUNED_CONFIG"] at a copy of the demo's tuned configuration (no report yet)."""
    config = tmp_path / "site.json"
    data = json.loads(DEMO_CONFIG.read_text())
    data["report"] = "site.report.json"
    config.write_text(json.dumps(data))
    with override_settings(EMBREC={**TEST_EMBREC, "TUNED_CONFIG": str(config)}):
        embrec_settings.reload()
        yield tmp_path / "site.report.json"
    embrec_settings.reload()


@pytest.fixture
def admin_client(client):
    client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
    return client


def test_report_page_shows_tables_svg_chart_and_tuned_settings(admin_client, tuned_at):
    shutil.copy(DEMO_REPORT, tuned_at)
    report = json.loads(DEMO_REPORT.read_text())
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    proto = report["protocols"]["leave-last"]
    section = html.split('data-protocol="leave-last"', 1)[1]
    for result in proto["results"]:
        row = re.search(rf'<tr data-method="{result["name"]}">(.*?)</tr>', section, re.S).group(1)
        assert f"{result['metrics']['ndcg@10']:.4f}" in row
        assert f"{result['validation_ndcg@10']:.4f}" in row
        assert f"{result['metrics']['recall@10']:.4f}" in row
    ci = proto["intervals"]["methods"]["adaptive"]
    adaptive = re.search(r'<tr data-method="adaptive">(.*?)</tr>', section, re.S).group(1)
    assert f"{ci['ratio']:.3f}× [{ci['ratio_low']:.3f}, {ci['ratio_high']:.3f}]" in adaptive
    assert "reference" in re.search(r'<tr data-method="recent-knn">(.*?)</tr>', section, re.S)[1]
    # The chart: inline SVG, one bar per method, lengths proportional to test NDCG.
    svg = re.search(r"<svg .*?</svg>", section, re.S).group(0)
    widths = {
        m: float(w)
        for m, w in re.findall(r'data-method="([^"]+)">.*?<rect [^>]*width="([\d.]+)"', svg)
    }
    ndcg = {r["name"]: r["metrics"]["ndcg@10"] for r in proto["results"]}
    assert set(widths) == set(ndcg)
    best = max(ndcg, key=ndcg.get)
    assert widths[best] == pytest.approx(360, abs=0.1)
    for name, value in ndcg.items():
        assert widths[name] == pytest.approx(360 * value / ndcg[best], abs=0.1)
    assert "<script" not in html.split('id="content-main"', 1)[1]
    # The tuned settings chosen.
    tuned = re.search(r'<table id="embrec-report-tuned">(.*?)</table>', html, re.S).group(1)
    assert "<th>RECOMMEND_POPULARITY</th><td>0.4</td>" in tuned
    # Linked from the dashboard.
    assert URL.encode() in admin_client.get("/admin/embrec/embedding/dashboard/").content


def test_report_page_escapes_method_names(admin_client, tuned_at):
    report = json.loads(DEMO_REPORT.read_text())
    report["protocols"]["leave-last"]["results"][0]["name"] = "<b>evil</b>"
    tuned_at.write_text(json.dumps(report))
    html = admin_client.get(URL).content.decode()
    assert "<b>evil</b>" not in html
    assert "&lt;b&gt;evil&lt;/b&gt;" in html


def test_missing_report_says_how_to_produce_one(admin_client, tuned_at):
    response = admin_client.get(URL)
    assert response.status_code == 200
    assert f"No evaluation report at {tuned_at}." in response.content.decode()
    assert b"manage.py embrec_tune" in response.content
    with override_settings(EMBREC={**TEST_EMBREC, "TUNED_CONFIG": None}):
        embrec_settings.reload()
        response = admin_client.get(URL)
    assert response.status_code == 200
    assert b"Neither EMBREC[&#x27;TUNED_CONFIG&#x27;] nor" in response.content
    assert b"manage.py embrec_tune" in response.content


def test_evaluation_report_setting_shows_a_full_evaluation_run(admin_client):
    full = TEST_BASE_DIR / "docs" / "evaluation" / "ml100k.json"
    with override_settings(EMBREC={**TEST_EMBREC, "EVALUATION_REPORT": str(full)}):
        embrec_settings.reload()
        response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert str(full) in html
    report = json.loads(full.read_text())
    for name, proto in report["protocols"].items():
        section = html.split(f'data-protocol="{name}"', 1)[1]
        svg = re.search(r"<svg .*?</svg>", section, re.S).group(0)
        assert svg.count("<rect ") == len(proto["results"])
    assert "embrec-report-tuned" not in html  # no tuned configuration set here


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object with a &quot;protocols&quot; object"),
        ('{"k": 10, "protocols": {"p": {"results": [{"name": "x"}]}}}', "KeyError"),
        (
            '{"k": 10, "protocols": {"p": {"results": [{"name": "x", '
            '"metrics": {"ndcg@10": "high"}}]}}}',
            "ndcg@10 must be a number",
        ),
        ('{"k": 0, "protocols": {}}', "must be a positive integer"),
    ],
)
def test_malformed_report_gives_a_clear_message(admin_client, tuned_at, content, message):
    tuned_at.write_text(content)
    response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert f"The evaluation report {tuned_at}" in html
    assert message in html
    assert "manage.py embrec_tune" in html


def test_report_page_is_staff_only_with_view_permission(client, tuned_at):
    shutil.copy(DEMO_REPORT, tuned_at)
    assert client.get(URL).status_code == 302  # anonymous: to the login page
    user = User.objects.create_user("plain", "p@example.com", "pw")
    user.user_permissions.set(Permission.objects.filter(codename="view_embedding"))
    client.force_login(user)
    assert client.get(URL).status_code == 302  # not staff: to the login page
    user.is_staff = True
    user.user_permissions.clear()
    user.save()
    assert client.get(URL).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_embedding"))
    assert client.get(URL).status_code == 200
