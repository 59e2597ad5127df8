from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("testapp", "0002_section"),
    ]

    operations = [
        migrations.CreateModel(
            name="Photo",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("title", models.CharField(max_length=200)),
                ("image", models.ImageField(blank=True, upload_to="photos/")),
            ],
        ),
    ]
