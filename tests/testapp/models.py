"""Models used by the test suite."""

from django.db import models


class Section(models.Model):
    """A related model: articles filter on ``section__slug`` and load their section with results."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Article(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    category = models.CharField(max_length=50, blank=True)
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)
    tenant = models.CharField(max_length=50, blank=True, default="")
    published = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    section = models.ForeignKey(
        Section, null=True, blank=True, on_delete=models.SET_NULL, related_name="articles"
    )

    def __str__(self) -> str:
        return self.title


class Note(models.Model):
    """A model with a non-integer primary key."""

    slug = models.SlugField(primary_key=True)
    text = models.TextField()

    def __str__(self) -> str:
        return self.slug


class Photo(models.Model):
    """A model with an image: image encoders read ``image``."""

    title = models.CharField(max_length=200)
    image = models.ImageField(upload_to="photos/", blank=True)

    def __str__(self) -> str:
        return self.title
