"""Demo catalog: MovieLens-100k movies."""

from django.db import models


class Movie(models.Model):
    movielens_id = models.PositiveIntegerField(unique=True)
    title = models.CharField(max_length=255)
    year = models.PositiveSmallIntegerField(null=True, blank=True)
    genres = models.CharField(max_length=255, blank=True, help_text="Space-separated genres.")
    published = models.BooleanField(default=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return f"{self.title} ({self.year})" if self.year else self.title

    @property
    def genre_list(self) -> list[str]:
        return self.genres.split()
