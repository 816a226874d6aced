"""Search in conversations: titles and message text, in any script, with highlighted snippets.

Korean attaches particles to its words (``검색을``, ``검색이``) and Chinese puts no spaces between
them, so whole-word matching cannot find ``검색`` or ``搜索``: the query is found as a substring,
ignoring case. Indexes make that fast (migration 0011_search): on SQLite a contentless FTS5
table with the trigram tokenizer over message text, kept in step by triggers; on PostgreSQL
pg_trgm GIN indexes, which serve ``ILIKE '%…%'``.

Trigrams need three characters. On SQLite a shorter query is looked up among the index's terms
(the trigrams that begin with it); one too common for the terms to pay (more than ``MAX_TERMS``)
is matched by ``LIKE``, newest message first, stopping at the first page of results. On
PostgreSQL each finished message keeps its pieces (its distinct characters and pairs of
characters) in a GIN-indexed column a trigger fills (0015_short_query_pieces). Titles
are matched by ``LIKE``/``ILIKE`` within the member's conversations (found through the owner
index): a member's titles are few next to their messages.

``search`` takes the conversations to search as a queryset, so the caller decides whose are
searched (``selectors.search``: the member's own and those shared with them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, connections
from django.db.models import F, Lookup, QuerySet, Value
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from . import text
from .models import Conversation, Message

MAX_QUERY_CHARS = 200  # longer queries are cut: nobody types more, and it bounds the work
MESSAGE_RESULTS = 50
TITLE_RESULTS = 20
SNIPPET_CHARS = 160
TRIGRAM = 3  # the shortest query the indexes serve
FTS_TABLE = "conversations_message_search"
MAX_TERMS = 256  # a shorter query matching more index terms is common: scanning finds it soon
COMMON_PIECES = 200  # PostgreSQL: a short query held by more messages is common, likewise
# SQLite's triggers that keep the index in step with the message table, as 0021 made them: a
# message is indexed once it is final (the reply engine's appends to a reply being written cost
# the index nothing; those few are found by LIKE). Each text is indexed with two newlines after
# it, so every occurrence of a one- or two-character query begins a trigram. Django rebuilds a
# SQLite table for most schema changes, dropping its triggers: ``repair_index`` (after every
# migrate) puts them back.
_UNFINISHED_SQL = "(" + ", ".join(f"'{status}'" for status in Message.UNFINISHED) + ")"
_INDEX_NEW = (f"INSERT INTO {FTS_TABLE}(rowid, content) SELECT new.id, new.content || char(10, 10) "
              f"WHERE new.status NOT IN {_UNFINISHED_SQL};")
_UNINDEX_OLD = (f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, content) SELECT 'delete', old.id, "
                f"old.content || char(10, 10) WHERE old.status NOT IN {_UNFINISHED_SQL};")
SQLITE_TRIGGERS = {
    f"{FTS_TABLE}_insert": f"AFTER INSERT ON conversations_message BEGIN {_INDEX_NEW} END",
    f"{FTS_TABLE}_delete": f"AFTER DELETE ON conversations_message BEGIN {_UNINDEX_OLD} END",
    f"{FTS_TABLE}_update": "AFTER UPDATE OF content, status ON conversations_message "
    "WHEN old.content IS NOT new.content OR old.status IS NOT new.status "
    f"BEGIN {_UNINDEX_OLD} {_INDEX_NEW} END",
}


@dataclass(frozen=True)
class Hit:
    """One result: a conversation whose title matched (``message_id`` None) or one of its
    messages, with the title and the snippet highlighted (escaped, ``<mark>`` around matches)."""

    conversation_id: int
    title: SafeString
    message_id: int | None
    snippet: SafeString
    at: datetime
    shared: bool = False  # another member's conversation, shared with the searcher


class _Holds(Lookup):
    """``lhs`` holds the LIKE pattern ``rhs``, ignoring case: ``ILIKE`` on PostgreSQL (which its
    trigram index serves; Django's ``icontains`` compares ``UPPER()``, which it does not),
    ``LIKE`` on SQLite (case-insensitive for ASCII)."""

    lookup_name = "holds"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        operator = "ILIKE" if connection.vendor == "postgresql" else "LIKE"
        return f"{lhs} {operator} {rhs} ESCAPE '\\'", [*lhs_params, *rhs_params]


def repair_index(*, using: str = "default", **kwargs) -> bool:
    """Recreate SQLite's index triggers if a table rebuild dropped them, and rebuild the index
    from the messages; return whether it had to. (A ``post_migrate`` receiver.)"""
    database = connections[using]
    if database.vendor != "sqlite":
        return False
    with database.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name IN (%s, %s, %s, %s)",
                       [FTS_TABLE, *SQLITE_TRIGGERS])
        present = {name for (name,) in cursor.fetchall()}
        if FTS_TABLE not in present or present >= set(SQLITE_TRIGGERS):
            return False
        for name, definition in SQLITE_TRIGGERS.items():
            cursor.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {definition}")
        cursor.execute(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('delete-all')")
        cursor.execute(f"INSERT INTO {FTS_TABLE}(rowid, content) "
                       "SELECT id, content || char(10, 10) FROM conversations_message "
                       f"WHERE status NOT IN {_UNFINISHED_SQL}")
    return True


def normalize(query: str) -> str:
    """Return the query as searched: storable (no NUL), whitespace collapsed, at most
    ``MAX_QUERY_CHARS`` long."""
    return " ".join(text.clean(query or "").split())[:MAX_QUERY_CHARS]


def _like_pattern(query: str) -> str:
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _fts_phrase(query: str) -> str:
    """Return ``query`` as one FTS5 phrase: its operators (``NEAR``, ``*``, ``-``, ``"``) are
    text to find, not syntax."""
    return '"' + query.replace('"', '""') + '"'


def _holding(field: str, query: str) -> _Holds:
    return _Holds(F(field), Value(_like_pattern(query)))


def _matching_messages(conversations: QuerySet[Conversation], query: str,
                       before: int) -> QuerySet[Message]:
    """The messages in ``conversations`` holding ``query``, older than message ``before``: at
    least the newest ``MESSAGE_RESULTS + 1`` of them (the one more says another page follows)."""
    if connection.vendor == "sqlite":
        # Found within ``conversations`` already; filtering on them again here would make
        # SQLite walk their messages rather than look up these few.
        return Message.objects.filter(pk__in=_sqlite_message_ids(conversations, query, before))
    if len(query) < TRIGRAM:
        return Message.objects.filter(
            pk__in=_postgresql_short_ids(conversations, query, before))
    return Message.objects.filter(conversation__in=conversations.values("pk"), pk__lt=before).filter(
        _holding("content", query))


def _postgresql_short_ids(conversations: QuerySet[Conversation], query: str,
                          before: int) -> list[int]:
    """Return the ids of the newest messages in ``conversations`` holding ``query``, one or two
    characters long, on PostgreSQL: finished messages through their pieces (0015_short_query_pieces:
    the distinct characters and pairs of each text, lower-cased, in a GIN index), the others
    (replies being written) by ``ILIKE`` among the few rows without pieces.

    A rare query is answered from the index alone. A common one (more than ``COMMON_PIECES``
    messages hold it) is found sooner by reading messages newest first, stopping at the first
    page of results: the index would hand over every message holding it, to be sorted."""
    scope, scope_params = conversations.order_by().values("pk").query.sql_with_params()
    piece = "search_pieces @> ARRAY[lower(%s)]"
    unindexed = "(search_pieces IS NULL AND content ILIKE %s ESCAPE '\\')"
    pattern = _like_pattern(query)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM (SELECT 1 FROM conversations_message WHERE {piece} "
                       "LIMIT %s) AS holding", [query, COMMON_PIECES + 1])
        if cursor.fetchone()[0] > COMMON_PIECES:
            cursor.execute(
                f"SELECT id FROM conversations_message WHERE ({piece} OR {unindexed}) "
                f"AND conversation_id IN ({scope}) AND id < %s ORDER BY id DESC LIMIT %s",
                [query, pattern, *scope_params, before, MESSAGE_RESULTS + 1])
        else:
            # MATERIALIZED: the index finds the few holding it first, whatever the planner
            # guesses of how soon a scan in id order would meet them.
            cursor.execute(
                "WITH holding AS MATERIALIZED (SELECT id, conversation_id FROM "
                f"conversations_message WHERE {piece}) "
                f"SELECT id FROM holding WHERE conversation_id IN ({scope}) AND id < %s "
                f"UNION ALL SELECT id FROM conversations_message WHERE {unindexed} "
                f"AND conversation_id IN ({scope}) AND id < %s ORDER BY id DESC LIMIT %s",
                [query, *scope_params, before, pattern, *scope_params, before,
                 MESSAGE_RESULTS + 1])
        return [pk for (pk,) in cursor.fetchall()]


def _sqlite_message_ids(conversations: QuerySet[Conversation], query: str,
                        before: int) -> list[int]:
    """Return the ids of the newest messages in ``conversations`` holding ``query``: finished
    messages from the trigram index, by the query as a phrase or, shorter than a trigram, by the
    index terms (trigrams) that begin with it, which every occurrence begins (thanks to the two
    newlines after each text); replies still being written, which the index leaves out, by
    ``LIKE`` among the few rows the status index lists. Too many terms: the query is common,
    and scanning every message newest first finds enough soon."""
    match = _fts_phrase(query)
    if len(query) < TRIGRAM:
        # The tokenizer folds case as str.lower() does (for all but a few letters).
        start = query.lower()
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT term FROM {FTS_TABLE}_terms WHERE term >= %s AND term < %s "
                           "LIMIT %s", [start, start + "\U0010ffff", MAX_TERMS + 1])
            terms = [term for (term,) in cursor.fetchall()]
        match = " OR ".join(map(_fts_phrase, terms)) if len(terms) <= MAX_TERMS else None
    like, pattern = "content LIKE %s ESCAPE '\\'", _like_pattern(query)
    if match is None:  # common: every message, scanned newest first
        arms = [(like, [pattern])]
    else:
        # Finished messages from the index ("": no index term begins with it, none holds it),
        # then the replies still being written, which the index leaves out.
        arms = [(f"id IN (SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s)", [match])
                ] if match else []
        arms.append((f"status IN {_UNFINISHED_SQL} AND {like}", [pattern]))
    scope, scope_params = conversations.order_by().values("pk").query.sql_with_params()
    # "+conversation_id": not through the conversation index, so a scan goes newest first and
    # stops at the limit.
    sql = " UNION ALL ".join(
        f"SELECT id FROM conversations_message WHERE {where} "
        f"AND +conversation_id IN ({scope}) AND id < %s" for where, _params in arms)
    params = [value for _where, values in arms for value in (*values, *scope_params, before)]
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} ORDER BY id DESC LIMIT %s", [*params, MESSAGE_RESULTS + 1])
        return [pk for (pk,) in cursor.fetchall()]


@dataclass(frozen=True)
class Results:
    """One page of results: ``hits``, and ``older``, the message to continue before on the next
    page (None: this is the last)."""

    hits: list[Hit]
    older: int | None = None


NEWEST = 2**63 - 1  # before every message


def search(*, conversations: QuerySet[Conversation], query: str,
           before: int | None = None) -> Results:
    """Return what matches ``query`` in ``conversations``: the conversations whose title holds
    it (most recently active first), then the messages that hold it (newest first), at most
    ``MESSAGE_RESULTS`` of them; with ``before`` (a later page), only the messages older than
    that one."""
    query = normalize(query)
    if not query:
        return Results([])
    pattern = re.compile(re.escape(query), re.IGNORECASE)
    hits = []
    if before is None:
        titled = conversations.filter(_holding("title", query)).order_by("-updated_at", "-pk")
        hits = [
            Hit(conversation.pk, highlight(str(conversation), pattern), None, SafeString(""),
                conversation.updated_at)
            for conversation in titled.only("id", "title", "updated_at")[:TITLE_RESULTS]
        ]
    messages = list(
        _matching_messages(conversations, query, before or NEWEST).select_related("conversation")
        .only("pk", "content", "created_at", "conversation__id", "conversation__title")
        .order_by("-pk")[:MESSAGE_RESULTS + 1])
    older = messages[MESSAGE_RESULTS - 1].pk if len(messages) > MESSAGE_RESULTS else None
    hits += [
        Hit(message.conversation.pk, highlight(str(message.conversation), pattern), message.pk,
            highlight(message.content, pattern, SNIPPET_CHARS), message.created_at)
        for message in messages[:MESSAGE_RESULTS]
    ]
    return Results(hits, older)


def highlight(value: str, pattern: re.Pattern, width: int | None = None) -> SafeString:
    """Return ``value`` escaped with ``<mark>`` around each match of ``pattern``; with
    ``width``, only about that many characters around the first match, whitespace collapsed."""
    if width is not None:
        value = " ".join(value.split())
        first = pattern.search(value)
        start = max(0, first.start() - width // 3) if first else 0
        end = max(start + width, first.end() if first else 0)
        value = ("…" if start else "") + value[start:end] + ("…" if end < len(value) else "")
    parts, position = [], 0
    for match in pattern.finditer(value):
        parts += [escape(value[position:match.start()]), "<mark>", escape(match.group()),
                  "</mark>"]
        position = match.end()
    parts.append(escape(value[position:]))
    return mark_safe("".join(parts))  # every piece of ``value`` went through escape()
