"""Admin of the demo catalog: movies, with embrec's "Recompute embeddings" action."""

from django.contrib import admin

from embrec.admin import EmbeddingAdminMixin
from project.catalog.models import Movie


@admin.register(Movie)
class MovieAdmin(EmbeddingAdminMixin, admin.ModelAdmin):
    list_display = ["title", "year", "genres", "published"]
    list_filter = ["published", "year"]
    search_fields = ["title", "genres"]
