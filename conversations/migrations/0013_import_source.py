from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0010_model_catalog"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="import_source",
            field=models.CharField(blank=True, editable=False, max_length=200,
                                   verbose_name="imported from"),
        ),
        migrations.AddConstraint(
            model_name="conversation",
            constraint=models.UniqueConstraint(
                condition=models.Q(("import_source", ""), _negated=True),
                fields=("owner", "import_source"), name="conversation_imported_once",
            ),
        ),
    ]
