# Joins the three migrations of issue 12, written side by side (search, the sidebar and sharing,
# import), each on 0010. No operations.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0011_search"),
        ("conversations", "0012_sidebar_and_sharing"),
        ("conversations", "0013_import_source"),
    ]

    operations = []
