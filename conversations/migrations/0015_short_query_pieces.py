"""PostgreSQL: an index for one- and two-character queries (search.py).

pg_trgm's index needs three characters. Here each finished message keeps its pieces: the distinct
characters and pairs of adjacent characters of its text, lower-cased, none holding whitespace, in
a hidden ``search_pieces`` array column with a GIN index, so a short query is one index lookup
(``search_pieces @> ARRAY[query]``) however rare it is.

A trigger fills the column, so every writer is covered (inserts, ``bulk_create``, edits, imports,
the reply engine's final write) and nothing in Python knows the column: it is not in the model
state. The pieces are computed once a message is final: while a reply is pending or streaming
the column stays NULL and the flusher's ``content = content || new`` updates pay only the trigger
call. Unfinished messages (and any whose pieces are missing) are found by ``ILIKE`` among the
rows with NULL pieces, which a partial index lists.

SQLite needs none of it (its FTS5 vocabulary serves short queries): nothing runs there.
"""

from django.db import migrations

PIECES_FUNCTION = r"""
CREATE OR REPLACE FUNCTION conversations_message_pieces(t text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(DISTINCT p), '{}') FROM (
    SELECT c, lead(c) OVER (ORDER BY o) AS d
    FROM unnest(string_to_array(regexp_replace(lower(t), '\s', ' ', 'g'), NULL))
      WITH ORDINALITY AS u(c, o)
  ) s, unnest(ARRAY[c, c || d]) AS p
  WHERE p IS NOT NULL AND strpos(p, ' ') = 0
$$
"""

TRIGGER_FUNCTION = """
CREATE OR REPLACE FUNCTION conversations_message_index_pieces() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status IN ('pending', 'streaming') THEN
    NEW.search_pieces := NULL;
  ELSE
    NEW.search_pieces := conversations_message_pieces(NEW.content);
  END IF;
  RETURN NEW;
END
$$
"""

POSTGRESQL_FORWARD = [
    "ALTER TABLE conversations_message ADD COLUMN IF NOT EXISTS search_pieces text[]",
    PIECES_FUNCTION,
    TRIGGER_FUNCTION,
    "CREATE TRIGGER conversations_message_pieces_insert BEFORE INSERT ON conversations_message "
    "FOR EACH ROW EXECUTE FUNCTION conversations_message_index_pieces()",
    "CREATE TRIGGER conversations_message_pieces_update BEFORE UPDATE OF content, status "
    "ON conversations_message FOR EACH ROW "
    "WHEN (OLD.content IS DISTINCT FROM NEW.content OR OLD.status IS DISTINCT FROM NEW.status) "
    "EXECUTE FUNCTION conversations_message_index_pieces()",
    # The messages kept so far.
    "UPDATE conversations_message SET search_pieces = conversations_message_pieces(content) "
    "WHERE status NOT IN ('pending', 'streaming')",
    "CREATE INDEX IF NOT EXISTS message_search_pieces ON conversations_message "
    "USING gin (search_pieces)",
    "CREATE INDEX IF NOT EXISTS message_without_pieces ON conversations_message (id) "
    "WHERE search_pieces IS NULL",
]
POSTGRESQL_BACKWARD = [
    "DROP INDEX IF EXISTS message_without_pieces",
    "DROP INDEX IF EXISTS message_search_pieces",
    "DROP TRIGGER IF EXISTS conversations_message_pieces_update ON conversations_message",
    "DROP TRIGGER IF EXISTS conversations_message_pieces_insert ON conversations_message",
    "DROP FUNCTION IF EXISTS conversations_message_index_pieces()",
    "DROP FUNCTION IF EXISTS conversations_message_pieces(text)",
    "ALTER TABLE conversations_message DROP COLUMN IF EXISTS search_pieces",
]


def run(statements):
    def operation(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)
    return operation


class Migration(migrations.Migration):

    dependencies = [
        ("conversations", "0014_merge_issue_12"),
    ]

    operations = [
        migrations.RunPython(run(POSTGRESQL_FORWARD), run(POSTGRESQL_BACKWARD)),
    ]
