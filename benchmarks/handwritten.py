"""Similar-items endpoints a team would write by hand over the same table and HNSW index.

The alternative embrec's similar-items endpoint is measured against (``bench_query``,
``bench_rest``):

* :class:`PgvectorSimilarView` — a DRF view with pgvector-python's Django ``CosineDistance``:
  load the object's vector, order the other vectors by distance with ``LIMIT``, load the movies
  in one ``in_bulk`` (three statements);
* :class:`RawSQLSimilarView` — one hand-written SQL statement: the source vector selected inside
  the ANN query, the movies joined to the nearest rows.

Both use the partial HNSW index embrec builds for (movie, ``default``, 384 dimensions) with the
same expression and predicate, and the same ``hnsw.ef_search`` / ``hnsw.iterative_scan`` as
embrec (set on the connection by ``benchmarks.settings``, as a site would configure the
server). Neither checks per-request visibility beyond ``published`` nor re-ranks: they are the
floor a similar-items endpoint can reach with the ORM or with SQL.
"""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models.functions import Cast
from django.http import Http404
from pgvector.django import CosineDistance, VectorField
from rest_framework.response import Response
from rest_framework.views import APIView

from embrec.models import Embedding
from embrec.storage import IndexSpec
from project.catalog.models import Movie
from project.catalog.serializers import MovieSerializer

DIMS = 384
ENCODER = "default"


def _limit(request) -> int:
    try:
        limit = int(request.query_params.get("limit", 10))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise Http404("limit must be between 1 and 100")
    return limit


def pgvector_similar(pk: int, limit: int) -> list[tuple[Movie, float]]:
    """The ``limit`` movies nearest to movie ``pk`` with the ORM and ``CosineDistance``."""
    ct = ContentType.objects.get_for_model(Movie)
    rows = Embedding.objects.filter(content_type_id=ct.id, encoder=ENCODER, dimensions=DIMS)
    source = rows.filter(object_pk=str(pk)).values_list("vector", flat=True).first()
    if source is None:
        raise Http404(f"movie {pk} has no vector")
    # The index is on the expression vector::vector(384): order by the same expression.
    distance = CosineDistance(Cast("vector", VectorField(dimensions=DIMS)), source)
    nearest = list(
        rows.exclude(object_pk=str(pk))
        .annotate(distance=distance)
        .order_by("distance")
        .values_list("object_pk", "distance")[:limit]
    )
    movies = Movie.objects.filter(published=True).in_bulk([int(p) for p, _ in nearest])
    return [(movies[int(p)], d) for p, d in nearest if int(p) in movies]


def raw_similar(pk: int, limit: int) -> list[tuple[dict[str, Any], float]]:
    """The same in one SQL statement; movies as dicts of the serialized fields."""
    ct = ContentType.objects.get_for_model(Movie)
    spec = IndexSpec(ct.id, ENCODER, DIMS)
    vector_type = spec.vector_type
    sql = f"""
        SELECT m.id, m.movielens_id, m.title, m.year, m.genres, n.distance
          FROM (SELECT e.object_pk,
                       (e.vector::{vector_type}) <=> (
                           SELECT s.vector::{vector_type} FROM embrec_embedding s
                            WHERE s.content_type_id = %s AND s.encoder = %s AND s.object_pk = %s
                       ) AS distance
                  FROM embrec_embedding e
                 WHERE {spec.predicate_sql("e")} AND e.object_pk <> %s
                 ORDER BY distance LIMIT %s) n
          JOIN catalog_movie m ON m.id = n.object_pk::integer AND m.published
         WHERE n.distance IS NOT NULL
         ORDER BY n.distance
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [ct.id, ENCODER, str(pk), str(pk), limit])
        rows = cursor.fetchall()
    return [
        (
            {
                "id": r[0],
                "movielens_id": r[1],
                "title": r[2],
                "year": r[3],
                "genres": r[4].split(),
            },
            r[5],
        )
        for r in rows
    ]


class PgvectorSimilarView(APIView):
    """``GET bench/pgvector/<pk>/similar/?limit=10`` — ORM and ``CosineDistance``."""

    def get(self, request, pk: int):
        found = pgvector_similar(pk, _limit(request))
        objects = MovieSerializer([movie for movie, _ in found], many=True).data
        results = [
            {"score": 1.0 - distance, "source": "similar", "object": data}
            for (_, distance), data in zip(found, objects, strict=True)
        ]
        return Response({"results": results})


class RawSQLSimilarView(APIView):
    """``GET bench/raw/<pk>/similar/?limit=10`` — one SQL statement."""

    def get(self, request, pk: int):
        found = raw_similar(pk, _limit(request))
        if not found:
            raise Http404(f"movie {pk} has no vector")
        results = [
            {"score": 1.0 - distance, "source": "similar", "object": movie}
            for movie, distance in found
        ]
        return Response({"results": results})
