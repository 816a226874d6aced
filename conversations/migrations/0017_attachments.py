import django.db.models.deletion
from django.db import migrations, models

import conversations.models


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0016_preference_language"),
    ]

    operations = [
        migrations.AddField(
            model_name="catalogmodel",
            name="image_detail",
            field=models.CharField(
                blank=True, choices=[("auto", "Automatic"), ("low", "Low"), ("high", "High")],
                help_text="How closely the model looks at attached images, unless the member "
                          "chooses (low is faster and cheaper).",
                max_length=8, verbose_name="image detail"),
        ),
        migrations.AddField(
            model_name="message",
            name="image_tokens",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.CreateModel(
            name="Attachment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("kind", models.CharField(choices=[("image", "Image"), ("text", "Text file")],
                                          max_length=8, verbose_name="kind")),
                ("name", models.CharField(max_length=255, verbose_name="name")),
                ("content_type", models.CharField(max_length=100, verbose_name="content type")),
                ("size", models.PositiveIntegerField(verbose_name="size")),
                ("width", models.PositiveIntegerField(blank=True, null=True)),
                ("height", models.PositiveIntegerField(blank=True, null=True)),
                ("file", models.FileField(max_length=255,
                                          storage=conversations.models.attachment_storage,
                                          upload_to=conversations.models.attachment_path)),
                ("text", models.TextField(blank=True)),
                ("detail", models.CharField(blank=True, choices=[("auto", "Automatic"),
                                                                 ("low", "Low"),
                                                                 ("high", "High")],
                                            max_length=8, verbose_name="image detail")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("message", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                              related_name="attachments",
                                              to="conversations.message")),
            ],
            options={
                "verbose_name": "attachment",
                "verbose_name_plural": "attachments",
                "ordering": ["id"],
            },
        ),
    ]
