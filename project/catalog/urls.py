"""URLs of the demo's pages (see project/catalog/views.py)."""

from django.urls import path

from project.catalog import views

app_name = "catalog"

urlpatterns = [
    path("", views.home, name="home"),
    path("search/", views.search, name="search"),
    path("movies/<int:pk>/", views.movie_detail, name="movie"),
    path("movies/<int:pk>/rate/", views.rate, name="rate"),
    path("browse-as/", views.browse_as, name="browse-as"),
]
