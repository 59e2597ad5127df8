"""Admin integration.

* :class:`EmbeddingAdminMixin` (alias :class:`ReindexAdminMixin`) adds a "Recompute embeddings"
  action to the ``ModelAdmin`` of any registered model::

      from embrec.admin import EmbeddingAdminMixin

      @admin.register(Movie)
      class MovieAdmin(EmbeddingAdminMixin, admin.ModelAdmin):
          ...

* :class:`EmbeddingAdmin` lists the stored vectors with the name of their object (loaded in bulk,
  one query per model on the page), searches them by that object's text, filters by model,
  encoder and state (fresh, stale, pending, failed) and offers a "Re-embed selected" action.
* The **dashboard** (``admin:embrec_dashboard``, linked from embrec's app index and the
  embeddings list) shows per registered model and encoder the counts of ``embrec_status``
  (objects, embedded, stale, pending, failed) and the last error, with a link to each one's
  **embedding map** (``admin:embrec_embedding_map``): a 2-D PCA projection of the vectors computed
  by the ``embrec.embedding_map`` task and cached (:mod:`embrec.embedding_map`), drawn as SVG
  points coloured by a field or a k-means cluster; hovering names an object, a click opens it.
  It needs the view permission on the model. The **clusters** and **duplicates** pages
  (``admin:embrec_clusters``, ``admin:embrec_duplicates``, linked from the dashboard) show the
  clusters of the vectors with their typical items and terms, and the near-duplicate pairs with
  links to both objects (:mod:`embrec.analysis_pages`), computed by tasks and cached likewise.
* The **evaluation report** (``admin:embrec_evaluation_report``, linked from the dashboard)
  shows the report ``embrec_tune`` wrote beside ``EMBREC["TUNED_CONFIG"]`` (or the file of
  ``EMBREC["EVALUATION_REPORT"]``): per protocol a table and an inline SVG bar chart of test
  NDCG@K per method, and the tuned settings (:mod:`embrec.report_page`).
* :class:`OutboxEntryAdmin` shows the work waiting in the outbox and the errors of failed objects,
  with a "Retry" action.

Actions only write outbox rows; workers do the encoding. Nothing here imports torch, except the
"stale" filter, which needs each encoder's identity.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.core.exceptions import BadRequest, PermissionDenied, ValidationError
from django.db import models
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import ngettext

from embrec import analysis_pages, dispatch, embedding_map, indexing, queries, report_page
from embrec.encoders import get_encoder
from embrec.exceptions import NotEmbedded, NotRegistered, QueryError
from embrec.models import Embedding, OutboxEntry, content_type_of
from embrec.registry import registry

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin as _ModelAdmin
else:
    _ModelAdmin = object


class EmbeddingAdminMixin(_ModelAdmin):
    """Adds the "Recompute embeddings" action to a ``ModelAdmin`` of a registered model.

    The action is offered to users with the change permission on the model (override
    :meth:`has_recompute_embeddings_permission` for another rule). It queues the selected objects
    with ``force=True`` (re-encoded even when their text is unchanged) and reports how many were
    queued.
    """

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if self.actions is None or not registry.is_registered(self.model):
            return actions
        if self.has_recompute_embeddings_permission(request):
            func = type(self).recompute_embeddings
            actions.setdefault(
                "recompute_embeddings",
                (func, "recompute_embeddings", func.short_description),
            )
        return actions

    #: Adds a "Similar items" link to the change form (keep it when overriding the template:
    #: extend ``admin/embrec/host_change_form.html``).
    change_form_template = "admin/embrec/host_change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        if registry.is_registered(self.model):
            extra_context["embrec_similar_url"] = reverse(
                "admin:embrec_preview_similar", args=[self.model._meta.label_lower, object_id]
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def has_recompute_embeddings_permission(self, request: HttpRequest) -> bool:
        """Who may recompute embeddings. Default: users who may change the objects."""
        return self.has_change_permission(request)

    @admin.action(description="Recompute embeddings")
    def recompute_embeddings(
        self, request: HttpRequest, queryset: QuerySet
    ) -> HttpResponseRedirect | None:
        """Queue the selected objects, then redirect to a page that follows the work live."""
        if not self.has_recompute_embeddings_permission(request):  # direct POSTs too
            self.message_user(request, "You may not recompute embeddings.", messages.ERROR)
            return None
        ct = content_type_of(self.model)
        after = OutboxEntry.objects.aggregate(last=Max("id"))["last"] or 0
        count = indexing.mark_dirty(queryset, force=True)
        self.message_user(
            request,
            ngettext(
                "%(count)d object queued for recomputing its embeddings.",
                "%(count)d objects queued for recomputing their embeddings.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
        if not count:
            return None
        upto = OutboxEntry.objects.filter(content_type=ct, id__gt=after).aggregate(last=Max("id"))[
            "last"
        ]
        query = urlencode({"ct": ct.id, "after": after, "upto": upto, "total": count})
        return HttpResponseRedirect(f"{reverse('admin:embrec_reindex_progress')}?{query}")


#: Same mixin, named after what it does for the host model.
ReindexAdminMixin = EmbeddingAdminMixin


def _outbox_rows(state: str):
    return OutboxEntry.objects.filter(
        state=state,
        content_type_id=OuterRef("content_type_id"),
        object_pk=OuterRef("object_pk"),
        encoder__in=["", OuterRef("encoder")],
    )


class EmbeddingStateFilter(admin.SimpleListFilter):
    """fresh: nothing queued; pending: queued for a worker; failed: the last attempt failed;
    stale: written by another encoder identity than the configured one."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("fresh", "fresh"),
            ("pending", "pending"),
            ("failed", "failed"),
            ("stale", "stale (encoder changed)"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        pending = Exists(_outbox_rows(OutboxEntry.PENDING))
        failed = Exists(_outbox_rows(OutboxEntry.FAILED))
        if value == "pending":
            return queryset.filter(pending)
        if value == "failed":
            return queryset.filter(failed)
        if value == "fresh":
            return queryset.exclude(pending).exclude(failed)
        if value == "stale":
            aliases = queryset.values_list("encoder", flat=True).distinct()
            stale_ids = queryset.none()
            for alias in aliases:
                try:
                    current = get_encoder(alias).identity.as_string()
                except Exception:  # an alias no longer configured: all of its vectors are stale
                    stale_ids = stale_ids | queryset.filter(encoder=alias)
                    continue
                stale_ids = stale_ids | queryset.filter(encoder=alias).exclude(identity=current)
            return queryset.filter(pk__in=stale_ids.values("pk"))
        return queryset


def attach_host_objects(embeddings: list[Embedding]) -> None:
    """Set ``host_object`` on each embedding: its object, or ``None`` when it is gone.

    One ``in_bulk`` query per content type present, whatever the number of rows.
    """
    groups: dict[int, list[Embedding]] = defaultdict(list)
    for emb in embeddings:
        groups[emb.content_type_id].append(emb)
    for ct_id, rows in groups.items():
        model = ContentType.objects.get_for_id(ct_id).model_class()
        found: dict[str, models.Model] = {}
        if model is not None:
            pk_field = model._meta.pk
            pks = set()
            for emb in rows:
                try:
                    pks.add(pk_field.to_python(emb.object_pk))
                except Exception:  # a pk string the model no longer accepts: object unknown
                    continue
            found = {str(pk): obj for pk, obj in model._default_manager.in_bulk(pks).items()}
        for emb in rows:
            emb.host_object = found.get(emb.object_pk)


class EmbeddingChangeList(ChangeList):
    """Loads the host objects of the page's rows in bulk (no query per row)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_list: list[Any] = list(self.result_list)
        attach_host_objects(self.result_list)


TEXT_FIELDS = (models.CharField, models.TextField)


def host_search_queryset(
    model_admin: admin.ModelAdmin, request: HttpRequest, model: type[models.Model], term: str
) -> QuerySet | None:
    """Objects of ``model`` matching ``term``, or ``None`` when the model is not searchable.

    The host model's own ``ModelAdmin`` search (its ``search_fields``) when it has one; else a
    case-insensitive match on the registration's ``fields`` that are text columns.
    """
    host_admin = model_admin.admin_site._registry.get(model)
    if host_admin is not None and host_admin.get_search_fields(request):
        qs, _ = host_admin.get_search_results(request, model._default_manager.all(), term)
        return qs
    condition = Q()
    for name in registry.get(model).fields:
        try:
            field = model._meta.get_field(name)
        except Exception:  # a method or property named in fields: not a column to search
            continue
        if isinstance(field, TEXT_FIELDS):
            condition |= Q(**{f"{name}__icontains": term})
    if not condition:
        return None
    return model._default_manager.filter(condition)


@admin.register(Embedding)
class EmbeddingAdmin(admin.ModelAdmin):
    """Read-only list of stored vectors with a "Re-embed selected" action.

    Search matches the object pk exactly, or the host objects' text: for each registered model,
    the host model admin's ``search_fields`` (or the registration's text ``fields``) select the
    matching objects in a subquery, so one SQL query filters the vectors.
    """

    list_display = [
        "object_link",
        "content_type",
        "encoder",
        "dimensions",
        "identity",
        "updated_at",
    ]
    list_filter = [
        ("content_type", admin.RelatedOnlyFieldListFilter),
        "encoder",
        EmbeddingStateFilter,
    ]
    search_fields = ["object_pk"]
    list_select_related = ["content_type"]
    show_full_result_count = False
    actions = ["reembed_selected"]
    fields = [
        "content_type",
        "object_pk",
        "encoder",
        "identity",
        "dimensions",
        "content_hash",
        "vector_preview",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        # Vectors are written by workers only (view-only); the change permission on Embedding
        # gates the re-embed action instead.
        return False

    def has_reembed_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("embrec.change_embedding")

    def get_urls(self):
        return [
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="embrec_dashboard",
            ),
            path(
                "evaluation-report/",
                self.admin_site.admin_view(self.evaluation_report_view),
                name="embrec_evaluation_report",
            ),
            path(
                "reindex-progress/",
                self.admin_site.admin_view(self.reindex_progress_view),
                name="embrec_reindex_progress",
            ),
            path(
                "reindex-progress.json",
                self.admin_site.admin_view(self.reindex_progress_json),
                name="embrec_reindex_progress_json",
            ),
            path(
                "preview/similar/<str:label>/<str:object_pk>/",
                self.admin_site.admin_view(self.preview_similar_view),
                name="embrec_preview_similar",
            ),
            path(
                "map/<str:label>/",
                self.admin_site.admin_view(self.embedding_map_view),
                name="embrec_embedding_map",
            ),
            path(
                "map/<str:label>.json",
                self.admin_site.admin_view(self.embedding_map_json),
                name="embrec_embedding_map_json",
            ),
            path(
                "clusters/<str:label>/",
                self.admin_site.admin_view(self.clusters_view),
                name="embrec_clusters",
            ),
            path(
                "duplicates/<str:label>/",
                self.admin_site.admin_view(self.duplicates_view),
                name="embrec_duplicates",
            ),
            path(
                "preview/user/",
                self.admin_site.admin_view(self.preview_user_view),
                name="embrec_preview_user",
            ),
            *super().get_urls(),
        ]

    def _may_see_objects(self, request: HttpRequest, model: type[models.Model]) -> bool:
        opts = model._meta
        return (
            self.has_view_permission(request)
            or request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}")
            or request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
        )

    def _page(self, request: HttpRequest, template: str, context: dict) -> TemplateResponse:
        """One of embrec's admin pages: ``template`` with the admin site's context."""
        return TemplateResponse(
            request,
            template,
            {**self.admin_site.each_context(request), "opts": self.model._meta, **context},
        )

    def _map_target(self, request: HttpRequest, label: str):
        """The registration and encoder of an embedding map request.

        Unknown model: 404; a user without the view (or change) permission on the model: 403;
        an encoder the registration does not use: 400.
        """
        try:
            rec = registry.get(label)
        except NotRegistered as exc:
            raise Http404("Not a registered model.") from exc
        opts = rec.model._meta
        if not (
            request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}")
            or request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
        ):
            raise PermissionDenied
        encoders = rec.get_encoders()
        encoder = request.GET.get("encoder") or (encoders[0] if encoders else "")
        if encoder not in encoders:
            raise BadRequest(f"{label} uses the encoders {', '.join(encoders)}, not {encoder!r}.")
        return rec, encoder, encoders

    def embedding_map_json(self, request: HttpRequest, label: str) -> HttpResponse:
        """The map of the current vectors (200), or ``{"ready": false}`` (202) after queueing
        the ``embrec.embedding_map`` task (once per vectors' state and 5 minutes)."""
        try:
            rec, encoder, _ = self._map_target(request, label)
        except BadRequest as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        key, result = embedding_map.cached(rec, encoder)
        if result is None:
            if cache.add(f"{key}:queued", True, 300):
                try:
                    dispatch.publish(dispatch.EMBEDDING_MAP, [rec.label, encoder])
                except Exception as exc:  # broker down: say so, let the next poll try again
                    cache.delete(f"{key}:queued")
                    return JsonResponse(
                        {"ready": False, "error": f"Could not queue the map: {exc}"}, status=503
                    )
                key, result = embedding_map.cached(rec, encoder)  # eager mode: already there
        if result is None:
            return JsonResponse({"ready": False}, status=202)
        try:
            change_url = reverse(
                f"admin:{rec.model._meta.app_label}_{rec.model._meta.model_name}_change",
                args=["__pk__"],
            )
        except NoReverseMatch:
            change_url = ""
        return JsonResponse({"ready": True, "change_url": change_url, **result})

    def embedding_map_view(self, request: HttpRequest, label: str) -> HttpResponse:
        """A 2-D map (PCA) of the model's vectors: hover names an object, click opens it."""
        rec, encoder, encoders = self._map_target(request, label)
        return self._page(
            request,
            "admin/embrec/embedding_map.html",
            {
                "title": f"Embedding map of {rec.model._meta.verbose_name_plural} ({encoder})",
                "label": rec.label,
                "encoder": encoder,
                "encoders": encoders,
                "json_url": (
                    reverse("admin:embrec_embedding_map_json", args=[rec.label])
                    + "?"
                    + urlencode({"encoder": encoder})
                ),
            },
        )

    def clusters_view(self, request: HttpRequest, label: str) -> HttpResponse:
        """Clusters of a model's vectors with typical items, terms and outliers
        (:mod:`embrec.analysis_pages`)."""
        context = analysis_pages.clusters_context(request, label)
        return self._page(request, "admin/embrec/clusters.html", context)

    def duplicates_view(self, request: HttpRequest, label: str) -> HttpResponse:
        """Near-duplicate pairs and isolated items of a model (:mod:`embrec.analysis_pages`)."""
        context = analysis_pages.duplicates_context(request, label)
        return self._page(request, "admin/embrec/duplicates.html", context)

    def preview_similar_view(self, request: HttpRequest, label: str, object_pk: str):
        """The similar items of one registered object, as the read path returns them."""
        try:
            rec = registry.get(label)
        except NotRegistered as exc:
            raise Http404("Not a registered model.") from exc
        if not self._may_see_objects(request, rec.model):
            raise PermissionDenied
        try:
            obj = rec.model._default_manager.get(pk=rec.pk_from_string(object_pk))
        except (rec.model.DoesNotExist, ValidationError, ValueError) as exc:
            raise Http404("No such object.") from exc
        error = ""
        results = []
        try:
            results = queries.similar(obj, request=request, limit=20)
        except (NotEmbedded, QueryError) as exc:
            error = str(exc)
        return self._page(
            request,
            "admin/embrec/preview_similar.html",
            {
                "title": f"Similar to {obj}",
                "results": results,
                "error": error,
            },
        )

    def preview_user_view(self, request: HttpRequest) -> HttpResponse:
        """Recommendations for any user; needs ``embrec.view_user_recommendations``."""
        if not request.user.has_perm("embrec.view_user_recommendations"):
            raise PermissionDenied
        recs = registry.all()
        label = request.GET.get("model") or (recs[0].label if recs else "")
        raw_user = request.GET.get("user", "").strip()
        results, error, target = [], "", None
        if raw_user:
            try:
                rec = registry.get(label)
            except NotRegistered as exc:
                raise BadRequest("Not a registered model.") from exc
            user_model = get_user_model()
            try:
                target = user_model._default_manager.get(pk=raw_user)
            except (user_model.DoesNotExist, ValidationError, ValueError):
                error = f"No user with id {raw_user!r}."
            if target is not None:
                try:
                    results = queries.recommend(target, model=rec.model, limit=20)
                except QueryError as exc:
                    error = str(exc)
        return self._page(
            request,
            "admin/embrec/preview_user.html",
            {
                "title": "Recommendations for a user",
                "labels": [r.label for r in recs],
                "label": label,
                "user_value": raw_user,
                "target": target,
                "results": results,
                "error": error,
            },
        )

    def _reindex_job(self, request: HttpRequest) -> dict:
        """The job a "Recompute embeddings" action queued, from the query string.

        A job is the outbox rows of one content type with ids in ``(after, upto]`` (written by
        the action), ``total`` of them. Bad numbers: 400; users who may neither view the
        objects nor the embeddings: 403.
        """
        try:
            ct_id, after, upto, total = (
                int(request.GET[name]) for name in ("ct", "after", "upto", "total")
            )
        except (KeyError, ValueError) as exc:
            raise BadRequest("ct, after, upto and total must be integers.") from exc
        if min(ct_id, after, upto, total) < 0 or upto < after:
            raise BadRequest("ct, after, upto and total must be integers, upto >= after.")
        try:
            ct = ContentType.objects.get_for_id(ct_id)
        except ContentType.DoesNotExist as exc:
            raise BadRequest("Unknown content type.") from exc
        model = ct.model_class()
        if model is None or not registry.is_registered(model):
            raise BadRequest("Not a registered model.")
        opts = model._meta
        if not (
            self.has_view_permission(request)
            or request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}")
            or request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")
        ):
            raise PermissionDenied
        return {"ct": ct, "model": model, "after": after, "upto": upto, "total": total}

    def reindex_progress(self, job: dict) -> dict:
        """``done``/``total`` of a job: rows drained by workers are deleted from the outbox."""
        rows = OutboxEntry.objects.filter(
            content_type=job["ct"], id__gt=job["after"], id__lte=job["upto"]
        )
        pending = rows.filter(state=OutboxEntry.PENDING).count()
        failed = rows.filter(state=OutboxEntry.FAILED).count()
        total = job["total"]
        done = max(0, min(total, total - pending - failed))
        return {
            "model": job["model"]._meta.label_lower,
            "total": total,
            "done": done,
            "pending": pending,
            "failed": failed,
            "percent": 100 if total == 0 else round(100 * done / total),
            "finished": pending == 0,
        }

    def reindex_progress_json(self, request: HttpRequest) -> HttpResponse:
        try:
            job = self._reindex_job(request)
        except BadRequest as exc:
            return JsonResponse({"error": str(exc)}, status=400)
        return JsonResponse(self.reindex_progress(job))

    def reindex_progress_view(self, request: HttpRequest) -> HttpResponse:
        job = self._reindex_job(request)
        return self._page(
            request,
            "admin/embrec/reindex_progress.html",
            {
                "title": f"Recomputing embeddings of {job['model']._meta.verbose_name_plural}",
                "progress": self.reindex_progress(job),
                "json_url": (
                    f"{reverse('admin:embrec_reindex_progress_json')}?{request.GET.urlencode()}"
                ),
            },
        )

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Per model and encoder: the counts of ``embrec_status`` and the last error.

        Staff only (``admin_view``) with the view permission on embeddings.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = []
        for row, error in indexing.status_rows(registry.all()):
            ct = content_type_of(registry.get(row["model"]).model)
            last = (
                OutboxEntry.objects.filter(
                    content_type=ct, encoder__in=["", row["encoder"]], state=OutboxEntry.FAILED
                )
                .order_by("-id")
                .values_list("last_error", flat=True)
                .first()
            )
            rows.append({**row, "last_error": last or "", "config_error": error})
        return self._page(
            request,
            "admin/embrec/dashboard.html",
            {
                "title": "Embeddings dashboard",
                "rows": rows,
            },
        )

    def evaluation_report_view(self, request: HttpRequest) -> HttpResponse:
        """The latest ``embrec_tune`` report: per protocol a table and an SVG bar chart of test
        NDCG@K, and the tuned settings. Staff with the view permission on embeddings."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context: dict = {"title": "Evaluation report", "how_to": report_page.HOW_TO}
        try:
            context["report"] = report_page.load_report()
        except report_page.ReportError as exc:
            context["error"] = str(exc)
            context["missing"] = exc.missing
        return self._page(request, "admin/embrec/evaluation_report.html", context)

    def get_changelist(self, request: HttpRequest, **kwargs):
        return EmbeddingChangeList

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(object_pk=term)
        for rec in registry.all():
            hosts = host_search_queryset(self, request, rec.model, term)
            if hosts is None:
                continue
            ct = content_type_of(rec.model)
            pks = (
                hosts.order_by()
                .annotate(embrec_pk=Cast("pk", output_field=models.CharField()))
                .values("embrec_pk")
            )
            condition |= Q(content_type=ct, object_pk__in=pks)
        return queryset.filter(condition), False

    @admin.display(description="object")
    def object_link(self, obj: Embedding) -> str:
        """The object's name (``app.model #pk`` when gone), linked to its admin page."""
        ct = obj.content_type
        host = getattr(obj, "host_object", None)
        label = str(host) if host is not None else f"{ct.app_label}.{ct.model} #{obj.object_pk}"
        try:
            url = reverse(f"admin:{ct.app_label}_{ct.model}_change", args=[obj.object_pk])
        except NoReverseMatch:
            return label
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="vector")
    def vector_preview(self, obj: Embedding) -> str:
        values = list(obj.vector[:8]) if obj.vector is not None else []
        more = ", …" if obj.dimensions > len(values) else ""
        return "[" + ", ".join(f"{v:.4f}" for v in values) + more + "]"

    @admin.action(description="Re-embed selected", permissions=["reembed"])
    def reembed_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        groups: dict[tuple[int, str], list[str]] = defaultdict(list)
        for ct_id, object_pk, encoder in queryset.values_list(
            "content_type_id", "object_pk", "encoder"
        ):
            groups[(ct_id, encoder)].append(object_pk)
        count = 0
        skipped = 0
        for (ct_id, encoder), pks in groups.items():
            model = ContentType.objects.get_for_id(ct_id).model_class()
            if model is None or not registry.is_registered(model):
                skipped += len(pks)
                continue
            count += indexing.enqueue(model, pks, encoder=encoder, force=True)
        self.message_user(
            request,
            ngettext(
                "%(count)d embedding queued for re-embedding.",
                "%(count)d embeddings queued for re-embedding.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                f"{skipped} embedding(s) belong to models no longer registered; not queued.",
                messages.WARNING,
            )


@admin.register(OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    """Work waiting for encoding workers, and the errors of objects that failed."""

    list_display = ["id", "content_type", "object_pk", "action", "encoder", "state", "attempts"]
    list_filter = ["state", "content_type", "action"]
    search_fields = ["object_pk", "last_error"]
    readonly_fields = [f.name for f in OutboxEntry._meta.fields]
    actions = ["retry_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("embrec.change_outboxentry")

    @admin.action(description="Retry selected", permissions=["retry"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.update(state=OutboxEntry.PENDING, last_error="", attempts=0)
        if count:
            indexing.schedule_kick()
        self.message_user(request, f"{count} outbox row(s) queued again.", messages.SUCCESS)
