import embrec
from tests.testapp.models import Article, Note


@embrec.register(Article)
class ArticleRecommendable(embrec.Recommendable):
    fields = ["title", "body"]
    encoders = ["hashing"]
    filter_fields = ["category", "price", "tenant", "section__slug"]
    select_related = ["section"]

    def get_queryset(self):
        return Article.objects.filter(published=True)

    def get_visible_queryset(self, request=None):
        qs = self.get_queryset()
        user = getattr(request, "user", None)
        tenant = getattr(user, "first_name", "") if user is not None else ""
        # Tenant-scoped articles are only visible to users of that tenant.
        return qs.filter(tenant__in=["", tenant]) if tenant else qs.filter(tenant="")


@embrec.register(Note)
class NoteRecommendable(embrec.Recommendable):
    fields = ["text"]
    encoders = ["hashing"]
