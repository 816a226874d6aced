"""One UsageDaily row per dimension set: NULL team or key compare equal (see 0003)."""

import django.db.models.functions.comparison
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0003_merge_duplicate_usage_rows'),
    ]

    operations = [
        migrations.AddConstraint(
            model_name='usagedaily',
            constraint=models.UniqueConstraint(
                models.F('day'), models.F('user'),
                django.db.models.functions.comparison.Coalesce(
                    'team', 0, output_field=models.BigIntegerField()
                ),
                django.db.models.functions.comparison.Coalesce(
                    'api_key', 0, output_field=models.BigIntegerField()
                ),
                models.F('organization'), models.F('project'), models.F('model'),
                name='usage_daily_one_row_per_dimensions',
            ),
        ),
    ]
