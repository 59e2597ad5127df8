"""URLs of the embrec API; include them under any prefix::

    path("api/embrec/", include("embrec.api.urls"))

=================================================  =============================================
``GET  items/<type>/<pk>/similar/``                objects similar to one object
``GET  items/<type>/popular/``                     most popular objects (anyone)
``GET  recommendations/?type=<type>``              the current user's recommendations
``GET  search/?q=<text>&type=<type>``              semantic search
``POST interactions/``                             record the current user's events
=================================================  =============================================
"""

from django.urls import path

from embrec.api import views

app_name = "embrec"

urlpatterns = [
    path(
        "items/<str:type>/<str:object_pk>/similar/",
        views.SimilarItemsView.as_view(),
        name="similar",
    ),
    path("items/<str:type>/popular/", views.PopularItemsView.as_view(), name="popular"),
    path("recommendations/", views.RecommendationsView.as_view(), name="recommendations"),
    path("search/", views.SearchView.as_view(), name="search"),
    path("interactions/", views.InteractionsView.as_view(), name="interactions"),
]
