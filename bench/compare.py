"""chatsite against the floor, in one run: the CPU it costs to relay replies, and the time it adds.

    .venv/bin/python bench/compare.py                  # SQLite, 1 worker
    .venv/bin/python bench/compare.py --database-url postgres://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/compare.py --database-url postgres://… --redis-url redis://127.0.0.1:6379/14 --workers 2

Three servers on loopback share the run: the fake upstream, the floor (``bench/relay_floor.py``,
the least a relay can do, under the same uvicorn) and chatsite. Both relays get the same batches,
interleaved round by round: ``--streams`` concurrent replies of ``--chunks`` tokens, and the same
number of one-token replies. Server CPU comes from /proc (user + system of the worker
processes), so other load on the machine does not count; from the two batch sizes:

- CPU per relayed token = (CPU of the long batch − CPU of the short batch) / extra tokens;
  and of it, the event loop's (the main thread: SSE views, uvicorn), the rest being the
  threads' (reading upstream, the flusher). The short batch is mostly fixed cost and is
  subtracted, so its noise lands on this figure: longer replies (``--chunks 1000``) steady it;
- fixed CPU per reply = CPU of the short batch / replies − one token's CPU
  (for chatsite: the POST, opening the stream, the final write);
- added time to first token = p50 of (first text at the client − request sent) minus the same
  read straight from the fake upstream;
- added chunk delay = p50/p99 of (arrival at the client − the fake's send time, stamped into
  the text) minus the same straight from the fake;
- message row writes per reply, from triggers on the message table;
- CPU per view of a conversation page with ``--page-messages`` messages (one-token replies).

chatsite talks to the benchmark over HTTP only. The table is printed; ``--out`` keeps JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment  # noqa: E402
from bench.client import open_stream  # noqa: E402
from bench.load import (  # noqa: E402
    HOST,
    create_conversation,
    free_port,
    limited,
    login,
)

STAMP = "\u2063"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=10, help="concurrent replies (10)")
    parser.add_argument("--chunks", type=int, default=300, help="tokens per long reply (300)")
    parser.add_argument("--rate", type=float, default=100.0, help="tokens/s per reply (100)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (4)")
    parser.add_argument("--database-url", help="PostgreSQL server; default SQLite")
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--page-messages", type=int, default=200,
                        help="messages in the conversation whose page is timed (200)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


class Floor:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [environment.PYTHON, "-m", "uvicorn", "bench.relay_floor:app", "--host", HOST,
             "--port", str(port), "--lifespan", "off", "--no-access-log", "--log-level",
             "warning"], cwd=environment.ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **environment.PROCESS_ENV})

    def pids(self) -> list[int]:
        return [self.process.pid]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._log.close()


def stamps(text: str) -> list[float]:
    return [float(part) for part in text.split(STAMP)[1::2] if part]


async def read(port: int, method: str, path: str, headers: dict, started: float,
               body: bytes | None = None) -> dict:
    """Read one stream; return when its first text came and each stamped piece's delay."""
    first, delays, text = None, [], []
    stream = await open_stream(HOST, port, method, path, headers=headers, body=body or b"")
    try:
        async with asyncio.timeout(120):
            async for event in stream.events():
                if event.name == "done" or event.data == "[DONE]":
                    # A reply over before its stream opened arrives whole in "done".
                    first = first or event.received
                    break
                piece = event.data
                if method == "POST":  # straight from the fake: JSON chunks
                    piece = "".join((c.get("delta") or {}).get("content") or ""
                                    for c in json.loads(event.data).get("choices") or [])
                else:
                    piece = html.unescape(piece)
                if not piece:
                    continue
                first = first or event.received
                text.append(piece)
                delays += [event.received - sent for sent in stamps(piece)]
    finally:
        stream.close()
    return {"ttft": (first or time.time()) - started, "delays": delays, "text": "".join(text)}


async def direct(fake_port: int) -> dict:
    body = json.dumps({"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "direct"}]}).encode()
    return await read(fake_port, "POST", "/v1/chat/completions",
                      {"Content-Type": "application/json", "Authorization": "Bearer sk-x"},
                      time.time(), body)


async def floor(port: int, fake_url: str) -> dict:
    return await read(port, "GET", f"/relay?upstream={fake_url}", {}, time.time())


async def chatsite(browser, conversation: int) -> dict:
    started = time.time()
    path = await browser.send(conversation, "compare")
    result = await read(browser.port, "GET", path, browser.headers(), started)
    result["message_id"] = int(path.split("/")[2])
    return result


def cpu(pids: list[int]) -> float:
    return sum(environment.cpu_seconds(pid) for pid in pids)


def loop_cpu(pids: list[int]) -> float:
    return sum(environment.loop_cpu_seconds(pid) for pid in pids)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main_async(args, fake, floor_server, server, browser, conversations, database) -> dict:
    figures = {name: {"long_cpu": 0.0, "short_cpu": 0.0, "long_loop": 0.0, "short_loop": 0.0,
                      "ttft": [], "delays": [], "tokens": 0, "replies": 0, "message_ids": []}
               for name in ("floor", "chatsite")}
    baseline = {"ttft": [], "delays": []}
    jobs = {
        "floor": (floor_server.pids, lambda: floor(floor_server.port, fake.base_url)),
        "chatsite": (server.worker_pids, None),
    }
    for round_number in range(args.rounds):
        for size in ("long", "short"):
            chunks = args.chunks if size == "long" else 1
            fake.command("default", scenario={
                "tokens": [f"w{i:04d} " for i in range(chunks)], "token_delay": 1 / args.rate,
                "stamp_content": size == "long"})
            for result in await limited(args.streams, [direct(fake.port)
                                                       for _ in range(args.streams)]):
                baseline["ttft"].append(result["ttft"])
                baseline["delays"] += result["delays"]
            order = ["floor", "chatsite"] if round_number % 2 == 0 else ["chatsite", "floor"]
            for name in order:
                pids, job = jobs[name]
                if name == "chatsite":
                    tasks = [chatsite(browser, conversations[i]) for i in range(args.streams)]
                else:
                    tasks = [job() for _ in range(args.streams)]
                before, loop_before = cpu(pids()), loop_cpu(pids())
                results = await limited(args.streams, tasks)
                await asyncio.sleep(0.3 if name == "floor" else
                                    float(server.settle))  # let final writes land
                spent = cpu(pids()) - before
                entry = figures[name]
                entry[f"{size}_cpu"] += spent
                entry[f"{size}_loop"] += loop_cpu(pids()) - loop_before
                entry["replies"] += len(results) if size == "long" else 0
                entry["tokens"] += sum(r["text"].count("w") for r in results) if size == "long" else 0
                entry["ttft"] += [r["ttft"] for r in results]
                entry["delays"] += [d for r in results for d in r["delays"]]
                entry["message_ids"] += [r.get("message_id") for r in results if size == "long"]
    table = {}
    replies_per_size = args.streams * args.rounds
    for name, entry in figures.items():
        extra_tokens = replies_per_size * (args.chunks - 1)
        per_token = (entry["long_cpu"] - entry["short_cpu"]) / extra_tokens
        loop_per_token = (entry["long_loop"] - entry["short_loop"]) / extra_tokens
        fixed = entry["short_cpu"] / replies_per_size - per_token
        row = {
            "cpu_per_token_us": round(per_token * 1e6, 1),
            # Of which the event loop (the main thread: the SSE views, uvicorn); the rest is
            # the threads: reading upstream (generation, the floor's pumps), the flusher.
            "loop_cpu_per_token_us": round(loop_per_token * 1e6, 1),
            "fixed_cpu_per_reply_ms": round(fixed * 1e3, 2),
            "added_ttft_p50_ms": round((pct(entry["ttft"], 0.5) - pct(baseline["ttft"], 0.5))
                                       * 1e3, 1),
            "added_delay_p50_ms": round((pct(entry["delays"], 0.5)
                                         - pct(baseline["delays"], 0.5)) * 1e3, 2),
            "added_delay_p99_ms": round((pct(entry["delays"], 0.99)
                                         - pct(baseline["delays"], 0.99)) * 1e3, 2),
        }
        if name == "chatsite" and database is not None:
            ids = [i for i in entry["message_ids"] if i]
            writes = database.writes(ids)
            row["message_row_writes_per_reply"] = round((writes["i"] + writes["u"]) / len(ids), 2)
        table[name] = row
    table["chatsite"]["page_cpu_ms"] = await page_cost(args, fake, server, browser)
    floor_row, site = table["floor"], table["chatsite"]
    table["ratio"] = {"cpu_per_token": round(site["cpu_per_token_us"]
                                             / max(floor_row["cpu_per_token_us"], 0.1), 2)}
    return table


async def page_cost(args, fake, server, browser, views: int = 20) -> float:
    """CPU of one view of a conversation page holding ``--page-messages`` messages."""
    from bench.client import fetch

    fake.command("default", scenario={"tokens": ["A **short** reply with `code`."]})
    conversation = await create_conversation(browser, 10_000)
    for index in range(args.page_messages // 2 - 1):
        path = await browser.send(conversation, f"question {index}")
        await read(browser.port, "GET", path, browser.headers(), time.time())
    path = f"/c/{conversation}/"
    await fetch(HOST, browser.port, "GET", path, headers=browser.headers())  # warm
    before = cpu(server.worker_pids())
    for _ in range(views):
        page = await fetch(HOST, browser.port, "GET", path, headers=browser.headers())
        assert page.status == 200 and page.body.count(b'class="message ') >= args.page_messages
    return round((cpu(server.worker_pids()) - before) / views * 1e3, 1)


def print_table(table: dict, args) -> None:
    print(f"\n{args.streams} concurrent replies × {args.chunks} tokens at {args.rate:g}/s, "
          f"{args.rounds} interleaved rounds; {args.workers} worker(s), "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}"
          f"{' + Redis' if args.redis_url else ''}")
    columns = ["cpu_per_token_us", "loop_cpu_per_token_us", "fixed_cpu_per_reply_ms",
               "added_ttft_p50_ms",
               "added_delay_p50_ms", "added_delay_p99_ms", "message_row_writes_per_reply"]
    print("| contender | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name in ("floor", "chatsite"):
        row = table[name]
        print(f"| {name} | " + " | ".join(str(row.get(c, "–")) for c in columns) + " |")
    print(f"\nchatsite / floor, CPU per relayed token: {table['ratio']['cpu_per_token']}×")
    print(f"chatsite, one view of a {args.page_messages}-message conversation: "
          f"{table['chatsite']['page_cpu_ms']} ms of CPU")


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatsite-compare-") as tmp:
        workdir = Path(tmp)
        database = environment.Database(workdir, args.database_url)
        fake = environment.FakeProcess(workdir / "fake.log")
        password = secrets.token_urlsafe(16)
        env = environment.server_env(
            workdir=workdir, database_url=database.url, redis_url=args.redis_url, debug=False,
            extra={"CHATSITE_MAX_GENERATIONS": "1000", "CHATSITE_KEEPALIVE_SECONDS": "15"})
        floor_server = server = None
        try:
            key_id = environment.prepare(env, database, fake.base_url, password)
            floor_server = Floor(free_port(), workdir / "floor.log")
            server = environment.Server(env, free_port(), args.workers, workdir / "server.log")
            server.settle = 0.5
            time.sleep(2)

            async def run() -> dict:
                for _ in range(100):
                    try:
                        browser = await login(server.port, password, key_id)
                        break
                    except OSError:
                        await asyncio.sleep(0.1)
                fake.command("default", scenario={"tokens": ["ok"]})
                conversations = await limited(8, [create_conversation(browser, i)
                                                  for i in range(args.streams)])
                return await main_async(args, fake, floor_server, server, browser,
                                        conversations, database)

            table = asyncio.run(run())
        finally:
            for process in (server, floor_server, fake):
                if process is not None:
                    process.stop()
            database.drop()
    print_table(table, args)
    if args.out:
        args.out.write_text(json.dumps(table, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
