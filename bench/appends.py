"""What one of the flusher's appends costs SQLite: a reply being written against a finished message.

    .venv/bin/python bench/appends.py [--rows 10] [--appends 100] [--piece-chars 100]

A throwaway SQLite database is made as chatsite makes it (``manage.py migrate``, its search
index triggers included) and holds ``--rows`` assistant messages. The flusher's statement,
``UPDATE conversations_message SET content = content || ? WHERE id = ?``, then appends
``--appends`` pieces of ``--piece-chars`` characters to each, in two runs side by side:

- to replies still being written (status ``streaming``): what the reply engine's flushes cost;
- to finished messages (status ``complete``): what every append cost before migration 0021, when
  the search index took each message's whole text out and put it back at every change.

Printed: CPU time of this process per append (SQLite runs in it), over the whole growth of the
text, and of the final write that marks the replies complete (where each is indexed, once).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment  # noqa: E402

SEED = """
from django.contrib.auth import get_user_model
from conversations.models import Conversation, Message
owner = get_user_model().objects.create_user("appends")
conversation = Conversation.objects.create(owner=owner, title="appends")
for status in ("streaming", "complete"):
    for _ in range({rows}):
        Message.objects.create(conversation=conversation, role="assistant", status=status)
"""


def appends(database: Path, ids: list[int], count: int, piece: str) -> tuple[float, float]:
    """Return the CPU seconds per append to the rows ``ids``, and of their final write."""
    db = sqlite3.connect(database)
    started = time.process_time()
    for _ in range(count):
        for pk in ids:
            db.execute("UPDATE conversations_message SET content = content || ? WHERE id = ?",
                       [piece, pk])
        db.commit()
    per_append = (time.process_time() - started) / (count * len(ids))
    started = time.process_time()
    db.execute("UPDATE conversations_message SET status = 'complete' "
               f"WHERE id IN ({', '.join('?' * len(ids))})", ids)
    db.commit()
    final = time.process_time() - started
    db.close()
    return per_append, final


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10, help="messages appended to (10)")
    parser.add_argument("--appends", type=int, default=100, help="appends to each (100)")
    parser.add_argument("--piece-chars", type=int, default=100, help="characters each (100)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        database = Path(workdir) / "appends.sqlite3"
        env = environment.server_env(workdir=Path(workdir), database_url=f"sqlite:///{database}",
                                     redis_url="", debug=False, extra={})
        environment.manage(env, "migrate", "--noinput")
        environment.manage(env, "shell", "-c", SEED.format(rows=args.rows))
        piece = ("word " * args.piece_chars)[:args.piece_chars]
        db = sqlite3.connect(database)
        ids = {status: [pk for (pk,) in db.execute(  # before either run marks its rows complete
            "SELECT id FROM conversations_message WHERE status = ? ORDER BY id", [status])]
            for status in ("streaming", "complete")}
        db.close()
        print(f"{args.rows} messages × {args.appends} appends of {args.piece_chars} characters "
              f"(each text grows to {args.appends * args.piece_chars:,} characters), SQLite")
        for status, label in (("streaming", "a reply being written"),
                              ("complete", "a finished message (as every one before 0021)")):
            per_append, final = appends(database, ids[status], args.appends, piece)
            ending = (f"; their final write (indexed then): {final * 1e3:.2f} ms"
                      if status == "streaming" else "")
            print(f"  {label}: {per_append * 1e6:7.1f} us of CPU per append{ending}")


if __name__ == "__main__":
    main()
