"""Clusters of a model's vectors: k-means and HDBSCAN, naming, outliers, command, admin page."""

import json
from io import StringIO

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from embrec import clusters
from embrec.exceptions import AnalysisError
from tests import planted
from tests.adminpages import login
from tests.testapp.models import Article

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue():
    return planted.build()


def labels_by_pk(result: clusters.Clustering, catalogue) -> dict[str, int]:
    """Each article's cluster, from a run that lists every item as typical."""
    return {m.pk: c.label for c in result.clusters for m in c.typical}


def assert_recovers_groups(result, catalogue):
    by_pk = labels_by_pk(result, catalogue)
    found = {}
    for name, articles in catalogue.groups.items():
        labels = {by_pk[str(a.pk)] for a in articles}
        assert len(labels) == 1, (name, labels)
        found[name] = labels.pop()
    assert len(set(found.values())) == 3, found
    return found


def test_spherical_kmeans_separates_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    x = np.vstack([c + rng.normal(0, 0.3, (30, 8)) for c in centres])
    centroids, labels = clusters.spherical_kmeans(x, 3, seed=1)
    assert centroids.shape == (3, 8)
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert [len(set(labels[i : i + 30])) for i in (0, 30, 60)] == [1, 1, 1]
    assert len(set(labels)) == 3
    again, labels_again = clusters.spherical_kmeans(x, 3, seed=1)
    assert np.array_equal(labels, labels_again) and np.allclose(centroids, again)
    # k larger than the number of points is clamped.
    assert clusters.spherical_kmeans(x[:2], 5)[0].shape[0] == 2


def test_tokens():
    assert clusters.tokens("The Lion King (1994). Genres: Animation, Children's, a 3-D") == {
        "1994",
        "3-d",
        "lion",
        "king",
        "genres",
        "animation",
        "children's",
    }


def test_kmeans_recovers_the_planted_groups(catalogue):
    result = clusters.find(Article, clusters=3, typical=50, outliers=3)
    assert result.method == "kmeans" and result.total == result.sampled == 39
    assert sum(c.size for c in result.clusters) == 39 and result.noise == 0
    assert [c.label for c in result.clusters] == [0, 1, 2]
    assert [c.size for c in result.clusters] == sorted(
        (c.size for c in result.clusters), reverse=True
    )
    found = assert_recovers_groups(result, catalogue)
    # Each cluster is named by its group's words, not another group's.
    for name, label in found.items():
        cluster = result.clusters[label]
        words = {term for term, _ in cluster.terms}
        assert name in words and words <= set(planted.GROUPS[name].split()) | {name}, words
        assert cluster.name.split(", ")[0] in words
    # Typical items are ordered by similarity to the centroid.
    sims = [m.similarity for m in result.clusters[0].typical]
    assert sims == sorted(sims, reverse=True)
    # The planted outlier is the item least similar to every centroid.
    assert result.outliers[0].pk == str(catalogue.outlier.pk)
    assert result.outliers[0].similarity < min(m.similarity for m in result.outliers[1:])


def test_sampled_fit_assigns_every_item_in_batches(catalogue):
    result = clusters.find(
        Article, clusters=3, sample=20, seed=2, typical=50, batch_size=7, terms=0
    )
    assert result.sampled == 20 and result.total == 39
    assert sum(c.size for c in result.clusters) == 39
    assert_recovers_groups(result, catalogue)
    assert all(c.terms == [] for c in result.clusters)
    data = result.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["params"] == {"clusters": 3, "sample": 20, "seed": 2}


def test_hdbscan_finds_the_groups_and_leaves_the_outlier_as_noise(catalogue):
    pytest.importorskip("sklearn", reason="scikit-learn is pinned in requirements.txt")
    # The most persistent clusters ("eom") join space and music (equally far from fruit); the
    # finest ones ("leaf") are the three groups.
    eom = clusters.find(Article, method="hdbscan", min_cluster_size=5, reduce=0, typical=50)
    assert len(eom.clusters) == 2 and {m.name for m in eom.clusters[0].typical} >= {
        "music 0",
        "space 0",
    }
    result = clusters.find(
        Article,
        method="hdbscan",
        min_cluster_size=5,
        min_samples=2,
        selection="leaf",
        reduce=0,
        typical=50,
    )
    assert len(result.clusters) == 3
    assert_recovers_groups(result, catalogue)
    assert result.noise >= 1
    outlier = next(m for m in result.outliers if m.pk == str(catalogue.outlier.pk))
    assert outlier.cluster == -1
    # On the first principal components (the default for HDBSCAN), every cluster holds items of
    # one group only, and the outlier is still noise.
    reduced = clusters.find(
        Article, method="hdbscan", min_cluster_size=5, min_samples=2, selection="leaf", typical=50
    )
    assert reduced.params["reduce"] == clusters.REDUCE and len(reduced.clusters) >= 3
    group_of = {str(a.pk): name for name, items in catalogue.groups.items() for a in items}
    for cluster in reduced.clusters:
        assert len({group_of[m.pk] for m in cluster.typical}) == 1, cluster
    assert str(catalogue.outlier.pk) not in {m.pk for c in reduced.clusters for m in c.typical}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"clusters": 0}, "clusters"),
        ({"method": "spectral"}, "method"),
        ({"sample": 1}, "sample"),
        ({"method": "hdbscan", "min_cluster_size": 1}, "min_cluster_size"),
        ({"method": "hdbscan", "min_samples": 0}, "min_samples"),
        ({"method": "hdbscan", "selection": "best"}, "selection"),
        ({"method": "hdbscan", "reduce": -1}, "reduce"),
    ],
)
def test_bad_parameters(catalogue, kwargs, message):
    with pytest.raises(AnalysisError, match=message):
        clusters.find(Article, **kwargs)


def test_no_vectors():
    with pytest.raises(AnalysisError, match="no 'hashing' vectors"):
        clusters.find(Article)


def run(*args) -> str:
    out = StringIO()
    call_command("embrec_clusters", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_command_text_and_json(catalogue):
    text = run("testapp.article", "-k", "3")
    assert "39 vectors" in text and "3 clusters" in text
    assert "terms:" in text and "outliers" in text and "misc" in text
    data = json.loads(run("testapp.article", "-k", "3", "--json", "--typical", "1"))
    assert [len(c["typical"]) for c in data["clusters"]] == [1, 1, 1]
    assert data["outliers"][0]["name"] == "misc"


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope.model"], "not registered"),
        (["Article"], "not a model label"),
        (["testapp.article", "-k", "0"], "clusters"),
        (["testapp.article", "--encoder", "glove"], "glove"),
        (["testapp.article", "--typical", "-1"], "typical"),
    ],
)
def test_command_errors(catalogue, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


URL = "/admin/embrec/embedding/clusters/testapp.article/"


def test_admin_page_shows_named_clusters_and_outliers(client, catalogue):
    login(client, superuser=True)
    response = client.get(URL + "?k=3")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="embrec-cluster"') == 3
    for name in planted.GROUPS:
        assert name in html
    outlier = catalogue.outlier
    assert f'data-pk="{outlier.pk}"' in html
    assert f'href="/admin/testapp/article/{outlier.pk}/change/"' in html
    dashboard = client.get("/admin/embrec/embedding/dashboard/").content.decode()
    assert f'href="{URL}?encoder=hashing"' in dashboard


def test_admin_page_hdbscan(client, catalogue):
    pytest.importorskip("sklearn", reason="scikit-learn is pinned in requirements.txt")
    login(client, superuser=True)
    html = client.get(URL + "?method=hdbscan&min_cluster_size=5&selection=leaf").content.decode()
    assert html.count('class="embrec-cluster"') >= 2 and "noise" in html


def test_admin_page_bad_input_and_permissions(client, catalogue):
    login(client, "view_embedding")
    assert client.get(URL).status_code == 403
    client.logout()
    User.objects.all().delete()
    login(client, "change_article")
    assert client.get(URL).status_code == 200
    assert client.get("/admin/embrec/embedding/clusters/nope.model/").status_code == 404
    for query in (
        "k=0",
        "k=x",
        "k=101",
        "method=spectral",
        "encoder=glove",
        "method=hdbscan&selection=best",
        "method=hdbscan&min_cluster_size=1",
    ):
        assert client.get(f"{URL}?{query}").status_code == 400, query
