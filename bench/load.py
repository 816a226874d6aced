"""Load benchmark: browsers streaming replies through chatsite, measured against the fake upstream
read directly by the same client in the same run.

    .venv/bin/python bench/load.py --streams 200 --chunks 50 --rate 50 --idle 3000
    .venv/bin/python bench/load.py --database-url postgres://postgres@127.0.0.1:5432/test \\
        --redis-url redis://127.0.0.1:6379/14 --workers 2

What one run does, all on loopback, in a throwaway data directory and database:

1. starts the fake upstream (``devtools/fake_upstream.py``) in its own process, migrates, adds an API
   key pointing at it and a user, starts chatsite under uvicorn (production settings unless
   ``--debug``), logs in, and creates the conversations through the app (a short reply each:
   the warm-up);
2. idle: posts a message to ``--idle / --idle-viewers`` conversations whose replies never get a
   first token, and opens ``--idle`` event streams on them, kept open to the end;
3. direct: ``--streams`` concurrent streams straight to the fake's /v1/chat/completions,
   ``--rounds`` each, ``--chunks`` tokens at ``--rate`` per second;
4. chatsite: the same through chatsite, as htmx does it: POST the message, read the stream URL
   from the returned HTML, open the SSE stream, read delta events until ``done``;
5. checks that every idle stream is still open and got a keep-alive, counts database writes per
   reply, and reports memory, CPU and latency (JSON and Markdown in ``--out``).

The load generator, the fake upstream and the server share this machine's cores: the figures
include that contention (the report gives each process's CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import platform
import random
import re
import resource
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import analysis, environment, pyspy, report  # noqa: E402
from bench.analysis import StreamRecord  # noqa: E402
from bench.client import EventStream, ProtocolError, fetch, open_stream  # noqa: E402

HOST = "127.0.0.1"
# chatsite runs behind a TLS-terminating proxy in production (and redirects plain HTTP there):
# the load generator plays that proxy's part.
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}
SSE_CONNECT = re.compile(r'sse-connect="([^"]+)"')
CREATE_CONCURRENCY = 24
IDLE_OPEN_CONCURRENCY = 64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="All traffic stays on 127.0.0.1; the run stops by itself (see --timeout).",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--streams", type=int, default=200, help="concurrent active streams (200)")
    load.add_argument("--chunks", type=int, default=50, help="tokens per reply (50)")
    load.add_argument("--rate", type=float, default=50.0,
                      help="tokens per second per stream (50)")
    load.add_argument("--rounds", type=int, default=3,
                      help="replies each stream slot runs back to back (3)")
    load.add_argument("--ramp", type=float, default=1.0,
                      help="slots start at random times within this many seconds (1.0)")
    load.add_argument("--first-token-delay", type=float, default=0.0,
                      help="the fake upstream's pause before the first token (0)")
    load.add_argument("--idle", type=int, default=3000,
                      help="idle event streams held open meanwhile (3000; 0: none)")
    load.add_argument("--idle-viewers", type=int, default=100,
                      help="idle streams per idle reply (100)")
    load.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    load.add_argument("--models", type=int, default=0,
                      help="the key lists this many chat models, as a real provider's does "
                           "(0: the fake's three)")
    server = parser.add_argument_group("server")
    server.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (1)")
    server.add_argument("--database-url", default=None,
                        help="a PostgreSQL server URL: a throwaway database is created on it "
                             "and dropped after the run (default: SQLite in a temp dir)")
    server.add_argument("--redis-url", default="", help="REDIS_URL for the server (none)")
    server.add_argument("--debug", action="store_true",
                        help="DJANGO_DEBUG=true (default: production settings)")
    server.add_argument("--keepalive", type=float, default=None,
                        help="CHATSITE_KEEPALIVE_SECONDS (default: the app's, 15)")
    server.add_argument("--flush-interval", type=float, default=None,
                        help="CHATSITE_FLUSH_INTERVAL (default: the app's, 0.25)")
    server.add_argument("--max-generations", type=int, default=None,
                        help="CHATSITE_MAX_GENERATIONS (default: enough for every reply of "
                             "the run at once; the app's own default is 64)")
    server.add_argument("--settings", default="chatsite.settings",
                        help="DJANGO_SETTINGS_MODULE, e.g. a prototype in bench/variants "
                             "(chatsite.settings)")
    server.add_argument("--server-python", default=sys.executable,
                        help="the interpreter that runs uvicorn, e.g. of a venv with uvloop and "
                             "httptools (uvicorn[standard]); default: this one")
    server.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the server (repeatable)")
    run = parser.add_argument_group("run")
    run.add_argument("--profile", action="store_true",
                     help="py-spy the (first) worker during the chatsite phase")
    run.add_argument("--timeout", type=float, default=900.0,
                     help="give up the whole run after this many seconds (900)")
    run.add_argument("--seed", type=int, default=1, help="random seed of the ramp (1)")
    run.add_argument("--label", default="", help="name of the result files")
    run.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                     help="where JSON and Markdown results go (bench/results)")
    run.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.chunks < 1 or args.rate <= 0 or args.rounds < 1:
        parser.error("--streams, --chunks, --rounds and --rate must be positive")
    if args.idle and args.idle_viewers < 1:
        parser.error("--idle-viewers must be positive")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def tokens(chunks: int) -> list[str]:
    return [f"w{i:04d} " for i in range(chunks)]


@dataclass
class Browser:
    """A logged-in member: session and CSRF cookies, as htmx sends them."""

    port: int
    session: str
    csrf: str
    key_id: int

    def headers(self, htmx: bool = False) -> dict[str, str]:
        headers = {**PROXY_HEADERS, "Cookie": f"csrftoken={self.csrf}; sessionid={self.session}"}
        if htmx:
            headers.update({"HX-Request": "true", "X-CSRFToken": self.csrf,
                            "Content-Type": "application/x-www-form-urlencoded",
                            **origin(self.port)})
        return headers

    async def post_message(self, conversation: int | None, content: str):
        path = f"/c/{conversation}/messages" if conversation else "/c/new/messages"
        body = urllib.parse.urlencode({"content": content, "model": f"{self.key_id}:gpt-4o-mini"})
        response = await fetch(HOST, self.port, "POST", path, headers=self.headers(htmx=True),
                               body=body.encode())
        if response.status != 200:
            raise ProtocolError(f"POST {path}: HTTP {response.status}: {response.body[:200]!r}")
        return response

    async def send(self, conversation: int, content: str) -> str:
        """Post a message the htmx way; return the reply's stream URL from the HTML."""
        response = await self.post_message(conversation, content)
        match = SSE_CONNECT.search(response.body.decode())
        if match is None:
            raise ProtocolError(f"no sse-connect in {response.body[:300]!r}")
        return html.unescape(match.group(1))

    async def read_to_end(self, path: str, timeout: float) -> StreamRecord:
        record = StreamRecord("chatsite", 0, 0, time.time())
        stream = await open_stream(HOST, self.port, "GET", path, headers=self.headers())
        record.opened = stream.opened
        try:
            async with asyncio.timeout(timeout):
                async for event in stream.events():
                    if event.name == "delta":
                        record.pieces.append((event.received, html.unescape(event.data)))
                    elif event.name == "done":
                        record.done = True
                        break
        finally:
            stream.close()
        return record


def origin(port: int) -> dict[str, str]:
    """What a browser sends with a same-origin POST (CSRF checks it on HTTPS)."""
    return {"Origin": f"https://{HOST}:{port}", "Referer": f"https://{HOST}:{port}/"}


async def login(port: int, password: str, key_id: int) -> Browser:
    page = await fetch(HOST, port, "GET", "/accounts/login/", headers=PROXY_HEADERS)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.body.decode())
    if page.status != 200 or token is None or "csrftoken" not in page.cookies:
        raise ProtocolError(f"login page: HTTP {page.status}")
    body = urllib.parse.urlencode(
        {"username": "bench", "password": password, "csrfmiddlewaretoken": token.group(1)}
    ).encode()
    response = await fetch(HOST, port, "POST", "/accounts/login/", body=body, headers={
        **PROXY_HEADERS, **origin(port),
        "Cookie": f"csrftoken={page.cookies['csrftoken']}",
        "Content-Type": "application/x-www-form-urlencoded",
    })
    if response.status != 302 or "sessionid" not in response.cookies:
        raise ProtocolError(f"login failed: HTTP {response.status}")
    csrf = response.cookies.get("csrftoken", page.cookies["csrftoken"])
    return Browser(port, response.cookies["sessionid"], csrf, key_id)


async def limited(concurrency: int, jobs) -> list:
    gate = asyncio.Semaphore(concurrency)

    async def one(job):
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


async def create_conversation(browser: Browser, index: int) -> int:
    """Start a conversation as a member would and read its first (short) reply to the end."""
    response = await browser.post_message(None, f"bench conversation {index}")
    match = re.search(r"/c/(\d+)/", response.headers.get("hx-redirect", ""))
    if match is None:
        raise ProtocolError(f"no HX-Redirect: {response.headers}")
    conversation = int(match.group(1))
    page = await fetch(HOST, browser.port, "GET", f"/c/{conversation}/",
                       headers=browser.headers())
    found = SSE_CONNECT.search(page.body.decode())
    if found is not None:
        await browser.read_to_end(html.unescape(found.group(1)), timeout=60)
    return conversation


# -- the two paths of an active stream -------------------------------------------------------


async def chatsite_stream(browser: Browser, conversation: int, slot: int, rnd: int,
                          timeout: float) -> StreamRecord:
    record = StreamRecord("chatsite", slot, rnd, time.time())
    try:
        path = await browser.send(conversation, f"bench slot {slot} round {rnd}")
        record.posted = time.time()
        record.message_id = int(re.search(r"/m/(\d+)/", path).group(1))
        stream = await open_stream(HOST, browser.port, "GET", path, headers=browser.headers())
        record.opened = stream.opened
        try:
            async with asyncio.timeout(timeout):
                async for event in stream.events():
                    if event.name == "delta":
                        record.pieces.append((event.received, html.unescape(event.data)))
                    elif event.name == "done":
                        record.done = True
                        record.final = event.data
                        break
        finally:
            stream.close()
    except Exception as exc:  # recorded, reported, counted as a failed stream
        record.error = f"{type(exc).__name__}: {exc}"[:300]
    return record


async def direct_stream(fake_port: int, slot: int, rnd: int, timeout: float) -> StreamRecord:
    record = StreamRecord("direct", slot, rnd, time.time())
    body = json.dumps({
        "model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": f"bench slot {slot} round {rnd}"}],
    }).encode()
    try:
        stream = await open_stream(HOST, fake_port, "POST", "/v1/chat/completions", body=body,
                                   headers={"Authorization": "Bearer sk-bench-direct",
                                            "Content-Type": "application/json",
                                            "Accept": "text/event-stream"})
        record.opened = stream.opened
        try:
            async with asyncio.timeout(timeout):
                async for event in stream.events():
                    if event.data == "[DONE]":
                        record.done = True
                        break
                    for choice in json.loads(event.data).get("choices") or []:
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            record.pieces.append((event.received, content))
        finally:
            stream.close()
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"[:300]
    return record


async def run_slots(slots: int, rounds: int, ramp: float, rng: random.Random,
                    one) -> list[StreamRecord]:
    """Run ``slots`` concurrent loops of ``rounds`` streams each, started over ``ramp`` s."""
    starts = [rng.uniform(0, ramp) for _ in range(slots)]

    async def slot(index: int) -> list[StreamRecord]:
        await asyncio.sleep(starts[index])
        return [await one(index, rnd) for rnd in range(rounds)]

    return [record for records in await asyncio.gather(*map(slot, range(slots)))
            for record in records]


# -- idle streams ----------------------------------------------------------------------------


@dataclass
class IdleViewer:
    path: str
    stream: EventStream | None = None
    opened: float | None = None
    error: str | None = None
    events: int = 0  # deltas or done: the reply moved, which it never should
    ended: bool = False  # the server closed the stream


async def idle_view(browser: Browser, viewer: IdleViewer, gate: asyncio.Semaphore) -> None:
    try:
        async with gate:
            viewer.stream = await open_stream(HOST, browser.port, "GET", viewer.path,
                                              headers=browser.headers())
        viewer.opened = viewer.stream.opened
        async for _event in viewer.stream.events():
            viewer.events += 1
        viewer.ended = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        viewer.error = f"{type(exc).__name__}: {exc}"[:300]


def idle_summary(viewers: list[IdleViewer], requested: int) -> dict:
    opened = [v for v in viewers if v.opened is not None]
    keepalives = [v.stream.comments for v in opened if v.stream is not None]
    healthy = [
        v for v in opened
        if not v.error and not v.ended and not v.events and v.stream and v.stream.comments
    ]
    return {
        "requested": requested,
        "opened": len(opened),
        "healthy": len(healthy),
        "errors": sum(1 for v in viewers if v.error),
        "error_examples": sorted({v.error for v in viewers if v.error})[:5],
        "closed_by_server": sum(1 for v in viewers if v.ended),
        "got_events": sum(1 for v in viewers if v.events),
        "keepalives_min": min(keepalives, default=0),
        "keepalives_max": max(keepalives, default=0),
    }


# -- one run ---------------------------------------------------------------------------------


class Run:
    """The processes of one run and what it measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="chatsite-bench-"))
        self.database: environment.Database | None = None
        self.fake: environment.FakeProcess | None = None
        self.server: environment.Server | None = None
        self.sampler: environment.Sampler | None = None
        self.password = secrets.token_urlsafe(16)
        self.marks: dict[str, float] = {}
        self.cpu: dict[str, dict[str, float]] = {}
        self.result: dict = {}
        self.stack: dict[str, bool] = {}

    @property
    def idle_replies(self) -> int:
        args = self.args
        return -(-args.idle // args.idle_viewers) if args.idle else 0

    def mark(self, name: str) -> None:
        self.marks[name] = time.time()
        server = sum(environment.cpu_seconds(pid) for pid in self.server.pids())
        fake = environment.cpu_seconds(self.fake.pid)
        client = time.process_time()
        postgres = environment.service_cpu_seconds("postgres")
        redis = environment.service_cpu_seconds("redis-server")
        self.cpu[name] = {
            "server": server, "fake": fake, "client": client, "postgres": postgres,
            "redis": redis,
            # Everything else on the machine: other sessions' work, py-spy, the kernel.
            "others": environment.machine_busy_seconds() - server - fake - client - postgres
            - redis,
            "steal": environment.machine_steal_seconds(),
        }

    def server_extra_env(self) -> dict[str, str]:
        args = self.args
        needed = args.streams + self.idle_replies + CREATE_CONCURRENCY + 16
        extra = {
            "CHATSITE_MAX_GENERATIONS": str(args.max_generations or needed),
            # Idle replies wait for a first token for the whole run: longer than the app's
            # 120 s read timeout could be.
            "CHATSITE_FIRST_TOKEN_TIMEOUT": "3600", "CHATSITE_IDLE_TIMEOUT": "3600",
            # The load generator is the TLS-terminating proxy (X-Forwarded-Proto: https).
            "DJANGO_BEHIND_TLS_PROXY": "true",
            "DJANGO_SETTINGS_MODULE": args.settings,
        }
        if args.keepalive is not None:
            extra["CHATSITE_KEEPALIVE_SECONDS"] = str(args.keepalive)
        if args.flush_interval is not None:
            extra["CHATSITE_FLUSH_INTERVAL"] = str(args.flush_interval)
        for item in args.env:
            name, _, value = item.partition("=")
            extra[name] = value
        return extra

    def start(self) -> None:
        args = self.args
        self.database = environment.Database(self.workdir, args.database_url)
        self.fake = environment.FakeProcess(self.workdir / "fake.log")
        if args.models:
            self.scenario()  # the model list the key gets when it is added
        self.env = environment.server_env(
            workdir=self.workdir, database_url=self.database.url, redis_url=args.redis_url,
            debug=args.debug, extra=self.server_extra_env(),
        )
        self.key_id = environment.prepare(self.env, self.database, self.fake.base_url,
                                          self.password)
        self.port = free_port()
        self.server = environment.Server(self.env, self.port, args.workers,
                                         self.workdir / "server.log", args.server_python)
        deadline = time.time() + 60
        while True:
            if not self.server.alive():
                raise RuntimeError("the server exited:\n" + self.server.log_path.read_text())
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    pass
                if len(self.server.worker_pids()) >= args.workers:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.2)
        time.sleep(1.0 if args.workers > 1 else 0.2)  # let every worker finish booting
        self.stack = environment.server_stack(self.server.worker_pids()[0])
        self.sampler = environment.Sampler(self.server, self.database)
        self.sampler.start()

    def stop(self) -> None:
        for step in (
            lambda: self.sampler and self.sampler.stop(),
            lambda: self.server and self.server.stop(),
            lambda: self.fake and self.fake.stop(),
            lambda: self.database and self.database.drop(),
        ):
            try:
                step()
            except Exception as exc:  # cleanup goes on; say what failed
                print(f"cleanup: {type(exc).__name__}: {exc}", file=sys.stderr)

    def scenario(self, **fields) -> None:
        if self.args.models:
            # Not "bench-…": the key is "sk-bench-<hex>", and a model id holding eight characters
            # of a key is dropped from its list (upstream.list_models: no one can pick it).
            fields.setdefault("models", (["gpt-4o-mini", "gpt-4o"] + [
                f"gpt-listed-{i}" for i in range(self.args.models - 2)])[:self.args.models])
        self.fake.command("default", scenario=fields)

    async def wait_for_fake(self, count: int, timeout: float) -> int:
        deadline = time.time() + timeout
        while True:
            seen = (await asyncio.to_thread(self.fake.command, "count"))["count"]
            if seen >= count or time.time() > deadline:
                return seen
            await asyncio.sleep(0.2)

    async def drive(self) -> None:
        args = self.args
        rng = random.Random(args.seed)
        stream_timeout = args.chunks / args.rate * 4 + 60
        self.mark("up")
        browser = await login(self.port, self.password, self.key_id)
        self.scenario(tokens=["Hello", "!"])
        total = args.streams + self.idle_replies
        conversations = await limited(
            CREATE_CONCURRENCY, [create_conversation(browser, i) for i in range(total)]
        )
        active, idle = conversations[: args.streams], conversations[args.streams :]
        self.mark("conversations")

        viewers, idle_tasks = await self.open_idle(browser, idle)
        self.mark("idle_open")
        self.memory_idle = {
            pid: environment.memory_breakdown(pid) for pid in self.server.worker_pids()
        }

        expected = tokens(args.chunks)
        self.scenario(tokens=expected, token_delay=1 / args.rate, stamp_content=True,
                      first_token_delay=args.first_token_delay)
        direct: list[StreamRecord] = []
        if not args.no_direct:
            direct = await run_slots(
                args.streams, args.rounds, args.ramp, rng,
                lambda slot, rnd: direct_stream(self.fake.port, slot, rnd, stream_timeout),
            )
        self.mark("direct_done")
        writes_before = await asyncio.to_thread(self.database.writes_total)
        stats_before = await asyncio.to_thread(self.database.table_stats)
        spy = pyspy.start(self.server.worker_pids()[0], self.workdir) if args.profile else None
        self.mark("chatsite_start")
        records = await run_slots(
            args.streams, args.rounds, args.ramp, rng,
            lambda slot, rnd: chatsite_stream(browser, active[slot], slot, rnd, stream_timeout),
        )
        self.mark("chatsite_done")
        profiled = pyspy.finish(spy) if spy else None
        await asyncio.sleep(2.5)  # let the last flushes land and PostgreSQL's counters catch up
        writes_after = await asyncio.to_thread(self.database.writes_total)
        stats_after = await asyncio.to_thread(self.database.table_stats)
        replies = [r.message_id for r in records if r.message_id]
        statuses = await asyncio.to_thread(self.database.reply_statuses)
        per_reply = await asyncio.to_thread(self.database.writes, replies)

        idle_result = await self.close_idle(viewers, idle_tasks)
        self.mark("end")
        self.result = {
            "direct": analysis.summarise(direct, expected),
            "chatsite": analysis.summarise(records, expected),
            "idle": idle_result,
            "db_writes": report.db_writes(per_reply, len(replies), writes_before, writes_after,
                                          stats_before, stats_after, self.database.kind),
            "profile": profiled,
            "reply_statuses": statuses,
        }

    async def open_idle(self, browser: Browser, conversations: list[int]):
        args = self.args
        if not args.idle:
            return [], []
        self.scenario(tokens=["never"], first_token_delay=3600)
        paths = await asyncio.gather(*(
            browser.send(conversation, "wait forever") for conversation in conversations
        ))
        seen = await self.wait_for_fake(len(paths), timeout=60)
        if seen < len(paths):
            raise RuntimeError(f"only {seen} of {len(paths)} idle replies reached the fake")
        gate = asyncio.Semaphore(IDLE_OPEN_CONCURRENCY)
        viewers = [IdleViewer(paths[i % len(paths)]) for i in range(args.idle)]
        started = time.time()
        tasks = [asyncio.create_task(idle_view(browser, viewer, gate)) for viewer in viewers]
        while any(v.opened is None and v.error is None for v in viewers):
            await asyncio.sleep(0.1)
        self.idle_open_seconds = time.time() - started
        return viewers, tasks

    async def close_idle(self, viewers: list[IdleViewer], tasks: list[asyncio.Task]) -> dict:
        if not viewers:
            return idle_summary([], 0)
        keepalive = self.args.keepalive or 15.0
        last_open = max((v.opened for v in viewers if v.opened), default=time.time())
        wait = last_open + keepalive + 2.0 - time.time()
        if wait > 0:  # every idle stream must have had time for a keep-alive
            await asyncio.sleep(wait)
        summary = idle_summary(viewers, self.args.idle)
        summary["open_seconds"] = round(self.idle_open_seconds, 2)
        summary["held_seconds"] = round(time.time() - min(v.opened for v in viewers
                                                          if v.opened), 1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for viewer in viewers:
            if viewer.stream is not None:
                viewer.stream.close()
        return summary


def python_speed_us() -> float:
    """Best of 5 timings of ``sum(range(1000))`` in microseconds: how fast this machine runs
    Python right now (about 8-12 us on a current laptop core)."""
    import timeit

    return round(min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6, 1)


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=environment.ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "conversations",
                                "chatsite", "templates", "requirements.txt"],
                               cwd=environment.ROOT, capture_output=True, text=True,
                               timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [name for name in dirty if "/" in name or "." in name]
    return f"{head}{' + uncommitted ' + ', '.join(changed) if changed else ''}"


def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        mem_kb = int(handle.readline().split()[1])
    return {
        "nproc": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "cpu": model,
        "python": platform.python_version(), "kernel": platform.release(),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "loadavg_at_start": LOAD_AT_START,
        "python_sum_range_1000_us": SPEED_AT_START,
        "revision": git_revision(),
    }


def raise_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def main_async(run: Run) -> None:
    async with asyncio.timeout(run.args.timeout):
        await run.drive()


LOAD_AT_START = ""
SPEED_AT_START = 0.0


def main(argv: list[str] | None = None) -> int:
    global LOAD_AT_START, SPEED_AT_START
    args = parse_args(argv)
    raise_file_limit()
    LOAD_AT_START = " ".join(os.getloadavg().__repr__().strip("()").split(", "))
    SPEED_AT_START = python_speed_us()
    run = Run(args)
    started = time.time()
    print(f"chatsite load benchmark; work directory {run.workdir}", file=sys.stderr)
    interrupted = False
    try:
        run.start()
        asyncio.run(main_async(run))
    except (KeyboardInterrupt, TimeoutError) as exc:
        interrupted = True
        print(f"run stopped early: {type(exc).__name__}", file=sys.stderr)
    finally:
        log = run.server.log_path.read_text(errors="replace") if run.server else ""
        run.stop()
    if not run.result:
        print(log[-3000:], file=sys.stderr)
        return 2
    summary = report.build(run, args, machine(), log, time.time() - started,
                           command=" ".join(shlex.quote(a) for a in sys.argv))
    summary["interrupted"] = interrupted
    paths = report.write(summary, args.out, args.label)
    if log:  # beside the results (ignored by git), for the tracebacks
        log_path = paths[0].with_suffix(".server.log")
        log_path.write_text(log)
        paths.append(log_path)
    print(report.table(summary))
    print(f"\nresults: {', '.join(str(p) for p in paths)}")
    if not args.keep:
        shutil.rmtree(run.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
