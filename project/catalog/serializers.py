from rest_framework import serializers

from project.catalog.models import Movie


class MovieSerializer(serializers.ModelSerializer):
    genres = serializers.SerializerMethodField()

    class Meta:
        model = Movie
        fields = ["id", "movielens_id", "title", "year", "genres"]

    def get_genres(self, movie: Movie) -> list[str]:
        return movie.genre_list
