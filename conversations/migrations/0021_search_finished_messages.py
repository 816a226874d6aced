"""SQLite: the search index holds finished messages only (search.py).

Until now the triggers of 0011_search indexed every message, so each of the reply engine's
appends (``content = content || new``, every two seconds while a reply streams) had FTS5 take the
whole text so far out of the index and put it back, trigram by trigram: for a long reply, work
that grows with its length at every flush, in the server's own process. Now a message is indexed
once it is final, as PostgreSQL's pieces already were (0015_short_query_pieces); the few replies
still being written are found by ``LIKE`` among the rows the status index lists.

The index is rebuilt from the finished messages. PostgreSQL: nothing to do.
"""

from django.db import migrations

FTS = "conversations_message_search"
UNFINISHED = "('pending', 'streaming')"
INDEXED = f"INSERT INTO {FTS}(rowid, content) VALUES (new.id, new.content || char(10, 10));"
UNINDEXED = (f"INSERT INTO {FTS}({FTS}, rowid, content) "
             "VALUES ('delete', old.id, old.content || char(10, 10));")

OLD_TRIGGERS = {
    f"{FTS}_insert": f"AFTER INSERT ON conversations_message BEGIN {INDEXED} END",
    f"{FTS}_delete": f"AFTER DELETE ON conversations_message BEGIN {UNINDEXED} END",
    f"{FTS}_update": "AFTER UPDATE OF content ON conversations_message "
    f"WHEN old.content IS NOT new.content BEGIN {UNINDEXED} {INDEXED} END",
}
# The same two statements for every trigger: each acts only on a finished message's text.
INDEX_NEW = (f"INSERT INTO {FTS}(rowid, content) SELECT new.id, new.content || char(10, 10) "
             f"WHERE new.status NOT IN {UNFINISHED};")
UNINDEX_OLD = (f"INSERT INTO {FTS}({FTS}, rowid, content) SELECT 'delete', old.id, "
               f"old.content || char(10, 10) WHERE old.status NOT IN {UNFINISHED};")
NEW_TRIGGERS = {
    f"{FTS}_insert": f"AFTER INSERT ON conversations_message BEGIN {INDEX_NEW} END",
    f"{FTS}_delete": f"AFTER DELETE ON conversations_message BEGIN {UNINDEX_OLD} END",
    f"{FTS}_update": "AFTER UPDATE OF content, status ON conversations_message "
    "WHEN old.content IS NOT new.content OR old.status IS NOT new.status "
    f"BEGIN {UNINDEX_OLD} {INDEX_NEW} END",
}


def replace_triggers(triggers, indexed_rows):
    def operation(apps, schema_editor):
        if schema_editor.connection.vendor != "sqlite":
            return
        for name in triggers:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
        for name, definition in triggers.items():
            schema_editor.execute(f"CREATE TRIGGER {name} {definition}")
        schema_editor.execute(f"INSERT INTO {FTS}({FTS}) VALUES ('delete-all')")
        schema_editor.execute(f"INSERT INTO {FTS}(rowid, content) "
                              f"SELECT id, content || char(10, 10) FROM conversations_message "
                              f"{indexed_rows}")
    return operation


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0020_stamp"),
    ]

    operations = [
        migrations.RunPython(
            replace_triggers(NEW_TRIGGERS, f"WHERE status NOT IN {UNFINISHED}"),
            replace_triggers(OLD_TRIGGERS, ""),
        ),
    ]
