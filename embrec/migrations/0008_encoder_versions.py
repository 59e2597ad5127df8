"""Versioned embeddings: one vector row per (object, encoder, identity) and the version table.

The unique indexes of ``embrec_embedding`` and ``embrec_userembedding`` gain the identity, so
that a new model's vectors can be written beside the live model's. Existing rows keep their
identity; the live version of each alias is registered by the first worker, command or sweep
that runs after the upgrade (:func:`embrec.versions.sync_configured`).
"""

from django.db import migrations, models
from django.db.models.functions import Now


class Migration(migrations.Migration):
    dependencies = [
        ("embrec", "0007_popularity_counts"),
    ]

    operations = [
        migrations.CreateModel(
            name="EncoderVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "alias",
                    models.CharField(
                        help_text="Encoder alias from EMBREC['ENCODERS'].", max_length=64
                    ),
                ),
                ("identity", models.CharField(max_length=255)),
                ("dimensions", models.PositiveIntegerField()),
                ("config", models.JSONField(blank=True, default=dict)),
                (
                    "state",
                    models.CharField(
                        choices=[("live", "live"), ("pending", "pending"), ("retired", "retired")],
                        max_length=8,
                    ),
                ),
                ("created_at", models.DateTimeField(db_default=Now())),
                ("backfill_started_at", models.DateTimeField(blank=True, null=True)),
                ("backfill_queued_at", models.DateTimeField(blank=True, null=True)),
                ("live_since", models.DateTimeField(blank=True, null=True)),
                ("retired_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "db_table": "embrec_encoder_version",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("alias", "identity"), name="embrec_encoder_version_unique"
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("state", "live")),
                        fields=("alias",),
                        name="embrec_encoder_version_one_live",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("state", "pending")),
                        fields=("alias",),
                        name="embrec_encoder_version_one_pending",
                    ),
                ],
            },
        ),
        migrations.RemoveConstraint(
            model_name="embedding",
            name="embrec_embedding_unique",
        ),
        migrations.AddConstraint(
            model_name="embedding",
            constraint=models.UniqueConstraint(
                fields=("content_type", "object_pk", "encoder", "identity"),
                name="embrec_embedding_version_unique",
            ),
        ),
        migrations.RemoveConstraint(
            model_name="userembedding",
            name="embrec_user_embedding_unique",
        ),
        migrations.AddConstraint(
            model_name="userembedding",
            constraint=models.UniqueConstraint(
                fields=("user", "content_type", "encoder", "identity"),
                name="embrec_user_embedding_version_unique",
            ),
        ),
    ]
