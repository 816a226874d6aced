"""Indexes for searching message text and titles as substrings, in any script (search.py).

SQLite: a contentless FTS5 table with the trigram tokenizer over ``conversations_message.content``
(the index holds no second copy of the text), with a vocabulary table of its terms, kept in step
by triggers, so every writer is covered, the reply engine's ``content = content || new``
updates included.
PostgreSQL: pg_trgm GIN indexes, which serve ``ILIKE '%…%'``. Written by hand: SQL per engine
(``RunPython``, as ``RunSQL`` cannot tell engines apart), nothing for the model state.
"""

from django.db import migrations

FTS = "conversations_message_search"

# Each text is indexed with two newlines after it (SENTINEL), so that every occurrence of a one-
# or two-character query begins a trigram and search.py can find it through the index's terms.
# Contentless (content=''), because the indexed text is not a column: a view could supply it,
# but a view on the message table makes SQLite refuse Django's rebuilds of that table.
SENTINEL = "char(10, 10)"
INDEXED = f"INSERT INTO {FTS}(rowid, content) VALUES (new.id, new.content || {SENTINEL});"
UNINDEXED = (f"INSERT INTO {FTS}({FTS}, rowid, content) "
             f"VALUES ('delete', old.id, old.content || {SENTINEL});")

SQLITE_FORWARD = [
    f"CREATE VIRTUAL TABLE {FTS} USING fts5(content, content='', tokenize='trigram')",
    f"CREATE VIRTUAL TABLE {FTS}_terms USING fts5vocab({FTS}, 'row')",
    f"INSERT INTO {FTS}(rowid, content) SELECT id, content || {SENTINEL} FROM conversations_message",
    f"CREATE TRIGGER {FTS}_insert AFTER INSERT ON conversations_message BEGIN {INDEXED} END",
    f"CREATE TRIGGER {FTS}_delete AFTER DELETE ON conversations_message BEGIN {UNINDEXED} END",
    f"CREATE TRIGGER {FTS}_update AFTER UPDATE OF content ON conversations_message "
    f"WHEN old.content IS NOT new.content BEGIN {UNINDEXED} {INDEXED} END",
]
SQLITE_BACKWARD = [
    f"DROP TRIGGER IF EXISTS {FTS}_update",
    f"DROP TRIGGER IF EXISTS {FTS}_delete",
    f"DROP TRIGGER IF EXISTS {FTS}_insert",
    f"DROP TABLE IF EXISTS {FTS}_terms",
    f"DROP TABLE IF EXISTS {FTS}",
]

POSTGRESQL_FORWARD = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS message_content_trgm ON conversations_message "
    "USING gin (content gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS conversation_title_trgm ON conversations_conversation "
    "USING gin (title gin_trgm_ops)",
]
# The extension stays: other database objects may have come to use it.
POSTGRESQL_BACKWARD = [
    "DROP INDEX IF EXISTS conversation_title_trgm",
    "DROP INDEX IF EXISTS message_content_trgm",
]


def run(statements_by_vendor):
    def operation(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)
    return operation


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0010_model_catalog"),
    ]

    operations = [
        migrations.RunPython(
            run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRESQL_FORWARD}),
            run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRESQL_BACKWARD}),
        ),
    ]
