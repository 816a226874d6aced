"""One UsageDaily row per dimension set, an empty team or key included.

The previous unique constraint let rows with a NULL team or key repeat (NULLs are distinct), so
concurrent first replies of a day could each create a row. Existing duplicates are merged into
the oldest row, counters summed, before 0004 adds the expression-based constraint (a separate
migration: PostgreSQL cannot build an index in the transaction that changed the rows).
"""

from django.conf import settings
from django.db import migrations

DIMENSIONS = ("day", "user_id", "team_id", "api_key_id", "organization", "project", "model")
COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "estimated_tokens")


def merge_duplicates(apps, schema_editor):
    usage_daily = apps.get_model("conversations", "UsageDaily")
    keeper = {}
    for row in usage_daily.objects.order_by("pk").iterator():
        dimensions = tuple(getattr(row, name) for name in DIMENSIONS)
        first = keeper.get(dimensions)
        if first is None:
            keeper[dimensions] = row
            continue
        for counter in COUNTERS:
            setattr(first, counter, getattr(first, counter) + getattr(row, counter))
        first.save(update_fields=COUNTERS)
        row.delete()


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('conversations', '0002_teams_usage_budgets'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='usagedaily',
            name='usage_daily_unique_dimensions',
        ),
        migrations.RunPython(merge_duplicates, migrations.RunPython.noop),
    ]
