"""The demo's registration: movies are embedded from title, year and genres.

With the demo settings, personal recommendations use the ``adaptive`` encoder (ALS trained on the
ratings; MiniLM mapped into the ALS space for movies few or nobody rated), similar movies the
``similar`` encoder (item-kNN's co-rating cosine as vectors, MiniLM mapped into that space for
movies nobody rated), and search uses MiniLM (``default``): the configuration chosen on the
validation split of docs/ENCODERS.md. Where no ``adaptive`` encoder is configured (e.g. the test settings) movies use
MiniLM only.
"""

import embrec
from embrec.conf import embrec_settings
from project.catalog.models import Movie


@embrec.register(Movie)
class MovieRecommendable(embrec.Recommendable):
    filter_fields = ["year"]
    map_fields = ["genres"]
    serializer_class = "project.catalog.serializers.MovieSerializer"
    search_encoder = "default"

    similar_encoder = "similar"

    def get_encoders(self) -> list[str]:
        # The first alias serves recommendations (and similar items unless "similar" is
        # configured), "default" embeds searches.
        encoders = (
            ["adaptive", "default"] if "adaptive" in embrec_settings.ENCODERS else ["default"]
        )
        if "similar" in embrec_settings.ENCODERS:
            encoders.append("similar")
        return encoders

    def get_queryset(self):
        return Movie.objects.filter(published=True)

    def get_text(self, movie: Movie) -> str:
        genres = ", ".join(movie.genre_list)
        year = f" ({movie.year})" if movie.year else ""
        return f"{movie.title}{year}. Genres: {genres}."
