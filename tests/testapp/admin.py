"""An admin for articles, so that admin pages can link to their change pages."""

from django.contrib import admin

from tests.testapp.models import Article

admin.site.register(Article)
