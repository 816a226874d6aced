"""The test suite's ``FakeUpstream`` in a process of its own, steered over stdin/stdout.

Why a process: the fake writes every chunk of every stream; in the benchmark's process it would
fight the load generator for one interpreter lock and blur both. Protocol: one JSON object per
line each way. It prints ``{"port": N}`` once listening, then answers each command:

- ``{"cmd": "default", "scenario": {...}}``: answer later chat requests with ``Scenario(**...)``;
- ``{"cmd": "count"}``: ``{"count": N}``, the chat requests received since the last ``default``;
- ``{"cmd": "stop"}``: stop and exit (so does end of input).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools import fake_upstream  # noqa: E402
from devtools.fake_upstream import FakeUpstream, Scenario  # noqa: E402

# socketserver listens with a backlog of 5: a burst of a few hundred connects would then wait
# for SYN retransmits (a second or more) and show up as fake "time to first token".
fake_upstream._Server.request_queue_size = 4096


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    fake = FakeUpstream().start()
    reply({"port": fake.port})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "default":
                fake.default = Scenario(**command["scenario"])
                with fake._lock:
                    fake.requests.clear()  # counts restart; the process stays small
                reply({"ok": True})
            elif command["cmd"] == "count":
                reply({"count": len(fake.chat_requests)})
            elif command["cmd"] == "stop":
                break
    finally:
        fake.stop()
        reply({"stopped": True})


if __name__ == "__main__":
    main()
