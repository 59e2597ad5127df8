"""URLs of the embrec API; include them under any prefix::

path("api/embrec/", include("embrec.api.urls"))
"""

from django.urls import path

from embrec.api import views

app_name = "embrec"

urlpatterns = [
    path(
        "items/<str:type>/<str:pk>/similar/",
        views.SimilarItemsView.as_view(),
        name="similar",
    ),
]
