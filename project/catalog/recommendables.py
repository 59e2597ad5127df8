"""The demo's registration: movies are embedded from title, year and genres."""

import embrec
from project.catalog.models import Movie


@embrec.register(Movie)
class MovieRecommendable(embrec.Recommendable):
    filter_fields = ["year"]
    serializer_class = "project.catalog.serializers.MovieSerializer"

    def get_queryset(self):
        return Movie.objects.filter(published=True)

    def get_text(self, movie: Movie) -> str:
        genres = ", ".join(movie.genre_list)
        year = f" ({movie.year})" if movie.year else ""
        return f"{movie.title}{year}. Genres: {genres}."
