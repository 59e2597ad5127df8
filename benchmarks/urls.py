"""The demo's URLs plus the baselines of the REST benchmarks: a bare DRF endpoint and the
hand-written similar-items views of :mod:`benchmarks.handwritten`."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from benchmarks.handwritten import PgvectorSimilarView, RawSQLSimilarView
from project.urls import urlpatterns as project_urlpatterns


class ConstantListView(APIView):
    """A DRF endpoint returning a constant list shaped like a similar-items answer.

    ``?limit=N`` results, each with a score, a source and a serialized movie: what DRF itself
    costs (routing, authentication, content negotiation, JSON rendering) without any query.
    """

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        limit = int(request.query_params.get("limit", 10))
        results = [
            {
                "score": 0.9 - i / 100,
                "source": "similar",
                "object": {
                    "id": i,
                    "movielens_id": 100000 + i,
                    "title": f"Synthetic Item Title Number {i}",
                    "year": 1990 + i,
                    "genres": ["Drama", "Comedy"],
                },
            }
            for i in range(limit)
        ]
        return Response({"results": results})


urlpatterns = [
    path("bench/constant/", ConstantListView.as_view()),
    path("bench/pgvector/<int:pk>/similar/", PgvectorSimilarView.as_view()),
    path("bench/raw/<int:pk>/similar/", RawSQLSimilarView.as_view()),
    *project_urlpatterns,
]
