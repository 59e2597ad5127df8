"""The demo's registration: movies are embedded from title, year and genres.

With the demo settings, similar-movie and personal recommendations use the ``adaptive`` encoder
(ALS trained on the ratings; MiniLM mapped into the ALS space for movies few or nobody rated), and
search uses MiniLM (``default``): the configuration chosen on the validation split of
docs/ENCODERS.md. Where no ``adaptive`` encoder is configured (e.g. the test settings) movies use
MiniLM only.
"""

import embrec
from embrec.conf import embrec_settings
from project.catalog.models import Movie


@embrec.register(Movie)
class MovieRecommendable(embrec.Recommendable):
    filter_fields = ["year"]
    serializer_class = "project.catalog.serializers.MovieSerializer"
    search_encoder = "default"

    def get_encoders(self) -> list[str]:
        # The first alias serves similar items and recommendations, "default" embeds searches.
        if "adaptive" in embrec_settings.ENCODERS:
            return ["adaptive", "default"]
        return ["default"]

    def get_queryset(self):
        return Movie.objects.filter(published=True)

    def get_text(self, movie: Movie) -> str:
        genres = ", ".join(movie.genre_list)
        year = f" ({movie.year})" if movie.year else ""
        return f"{movie.title}{year}. Genres: {genres}."
