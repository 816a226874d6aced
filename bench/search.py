"""How long a search takes in a member's 10,000 conversations and 200,000 messages.

    .venv/bin/python bench/search.py                  # SQLite
    .venv/bin/python bench/search.py --database-url postgres://postgres@127.0.0.1:5432/test

A throwaway database (a SQLite file in a temporary directory, or a database created on the given
PostgreSQL server and dropped after) is migrated and filled, with ``bulk_create`` through the
ORM (so SQLite's index triggers run as they would), for one member: ``--conversations``
conversations of ``--messages`` messages in all, mixed English, Korean and Chinese text.
chatsite then runs under uvicorn (one worker, production settings) and the benchmark searches
over HTTP on loopback like a browser without JavaScript: ``GET /search/?q=…``. The time is from
sending the request to the last byte of the page, so it bounds the server's time from above.

Queries of three characters (through the index) and of two (the fallback), in each script, each
as a common word (a few per cent of messages), a rare one (a handful of messages) and a missing
one (no message: the fallback scans all the member's messages). Each is asked ``--repeat``
times after two warm-up requests; the table shows the median and the slowest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment  # noqa: E402
from bench.client import fetch  # noqa: E402
from bench.load import HOST, free_port, login  # noqa: E402

# (script, characters, kind, query). Common words are in the vocabularies below; rare ones are
# planted in RARE_EVERY-th messages; missing ones are nowhere.
QUERIES = [
    ("English", 3, "common", "tax"), ("English", 3, "rare", "qzv"),
    ("English", 3, "missing", "xqj"),
    ("English", 2, "common", "ox"), ("English", 2, "rare", "qz"), ("English", 2, "missing", "jq"),
    ("Korean", 3, "common", "검색을"), ("Korean", 3, "rare", "희귀한"),
    ("Korean", 3, "missing", "없는말"),
    ("Korean", 2, "common", "검색"), ("Korean", 2, "rare", "희귀"), ("Korean", 2, "missing", "뷁뷁"),
    ("Chinese", 3, "common", "搜索引"), ("Chinese", 3, "rare", "罕见词"),
    ("Chinese", 3, "missing", "不存在"),
    ("Chinese", 2, "common", "搜索"), ("Chinese", 2, "rare", "罕见"), ("Chinese", 2, "missing", "龘龘"),
]
RARE_EVERY = 20_000  # ten messages of 200,000 hold the rare words

SEED = """
import os, random
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from conversations.models import Conversation, Message

ENGLISH = ("the report tax invoice meeting budget plan review ox team customer deploy server "
           "question answer project deadline summary draft release search engine model prompt "
           "database index query result page browser window password account").split()
KOREAN = ("검색을 검색이 회의 보고서 예산 계획 검토 팀 고객 배포 서버 질문 답변 프로젝트 마감 요약 "
          "초안 출시 엔진 모델 데이터베이스 색인 결과 페이지 브라우저 창 계정 했다 합니다").split()
CHINESE = ("我在 搜索引擎 里 会议 报告 预算 计划 审查 团队 客户 部署 服务器 问题 回答 项目 截止 "
           "摘要 草稿 发布 模型 数据库 索引 结果 页面 浏览器 窗口 账户 找到了").split()
RARE = " qzv 희귀한 罕见词 "
rng = random.Random(12)
conversations_count = int(os.environ["BENCH_CONVERSATIONS"])
messages_count = int(os.environ["BENCH_MESSAGES"])
rare_every = int(os.environ["BENCH_RARE_EVERY"])


def sentence(number):
    words = rng.choice((ENGLISH, KOREAN, CHINESE))
    glue = "" if words is CHINESE else " "
    text = glue.join(rng.choice(words) for _ in range(rng.randint(8, 40)))
    return text + RARE if number % rare_every == rare_every // 2 else text


user = get_user_model().objects.create_user("bench", password=os.environ["BENCH_PASSWORD"])
with transaction.atomic():
    conversations = Conversation.objects.bulk_create(
        [Conversation(owner=user, title=sentence(-1)[:60]) for _ in range(conversations_count)],
        batch_size=2000)
per = messages_count // conversations_count
batch = []
for number in range(messages_count):
    conversation = conversations[number // per]
    batch.append(Message(conversation=conversation, role="user" if number % 2 == 0 else "assistant",
                         content=sentence(number)))
    if len(batch) == 10_000:
        with transaction.atomic():
            Message.objects.bulk_create(batch)
        batch = []
if batch:
    Message.objects.bulk_create(batch)
if connection.vendor == "postgresql":
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
print("SEEDED", Message.objects.count())
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server; default SQLite")
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per query (15)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    return parser.parse_args(argv)


async def measure(port: int, password: str, repeat: int) -> list[dict]:
    for _ in range(100):
        try:
            browser = await login(port, password, 0)
            break
        except OSError:
            await asyncio.sleep(0.1)
    rows = []
    for script, length, kind, query in QUERIES:
        path = "/search/?" + urllib.parse.urlencode({"q": query})
        times, results = [], 0
        for attempt in range(repeat + 2):
            started = time.perf_counter()
            response = await fetch(HOST, port, "GET", path, headers=browser.headers())
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}")
            results = response.body.decode().count('<li class="search-result">')
            if attempt >= 2:
                times.append(elapsed)
        rows.append({"script": script, "chars": length, "kind": kind, "query": query,
                     "results": results, "median_ms": round(statistics.median(times), 1),
                     "max_ms": round(max(times), 1)})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatsite-search-") as tmp:
        workdir = Path(tmp)
        database = environment.Database(workdir, args.database_url)
        password = secrets.token_urlsafe(16)
        env = environment.server_env(workdir=workdir, database_url=database.url, redis_url="",
                                     debug=False, extra={})
        server = None
        try:
            environment.manage(env, "migrate", "--noinput")
            started = time.perf_counter()
            output = environment.manage({
                **env, "BENCH_PASSWORD": password, "BENCH_CONVERSATIONS": str(args.conversations),
                "BENCH_MESSAGES": str(args.messages), "BENCH_RARE_EVERY": str(RARE_EVERY),
            }, "shell", "-c", SEED)
            seeded = time.perf_counter() - started
            count = output.split("SEEDED")[-1].strip()
            print(f"{database.kind}: {count} messages in {args.conversations} "
                  f"conversations, seeded in {seeded:.0f} s")
            server = environment.Server(env, free_port(), 1, workdir / "server.log")
            time.sleep(2)
            rows = asyncio.run(measure(server.port, password, args.repeat))
        finally:
            if server is not None:
                server.stop()
            database.drop()
    print(f"{'script':8} {'chars':>5} {'kind':8} {'query':8} {'results':>7} "
          f"{'median ms':>9} {'max ms':>7}")
    for row in rows:
        print(f"{row['script']:8} {row['chars']:>5} {row['kind']:8} {row['query']:8} "
              f"{row['results']:>7} {row['median_ms']:>9} {row['max_ms']:>7}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
