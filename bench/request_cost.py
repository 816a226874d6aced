"""What one request of each kind costs the server, one request at a time.

    .venv/bin/python bench/request_cost.py [--database-url URL] [--settings MODULE] [-n 200]

Measured as the server process's own CPU time (user + system, from /proc) over ``-n`` sequential
requests, which other work on the machine barely changes, and wall time per request. Kinds:
``/healthz`` (a bare view and one query), the chat page, opening the event stream of a reply
that is still being written (until its first bytes), the stream of a finished reply (to its
``done`` event), and a whole exchange: the htmx POST of a message and its one-token reply read
to the end.

``--django-floor`` runs the server with ``bench.variants.django_floor`` and times, beside those,
the least a reply's two requests cost in Django under chatsite's middleware: a bare POST that
answers 204 and a bare event stream of one event, each with the user checked.

``--models N`` has the key list N chat models, as a real provider's does (OpenAI lists dozens):
the chat page then offers each in its model list.

``--profile`` also samples the server with py-spy (``.venv/bin/pip install py-spy``; not a
project dependency) while each kind runs, and prints where its CPU went by layer: uvicorn,
Django's request handling and middleware, the session and user, the view, the reply engine.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import environment, load, pyspy  # noqa: E402
from bench.analysis import percentile  # noqa: E402
from bench.client import ProtocolError, fetch, open_stream  # noqa: E402


async def measure(run: load.Run, n: int, profile: bool = False, floor: bool = False) -> dict:
    browser = await load.login(run.port, run.password, run.key_id)
    run.scenario(tokens=["Hi"])
    conversation = await load.create_conversation(browser, 0)
    page = await fetch(load.HOST, run.port, "GET", f"/c/{conversation}/",
                       headers=browser.headers())
    finished = max(int(m) for m in re.findall(r'id="message-(\d+)"', page.body.decode()))
    models = page.body.decode().split('name="model"', 1)[-1].split("</select>", 1)[0]
    print(f"the chat page's model list: {models.count('<option')} options", flush=True)
    exchanges = await load.create_conversation(browser, 1)  # not behind the waiting reply
    run.scenario(tokens=["never"], first_token_delay=3600)
    waiting = await browser.send(conversation, "wait")
    run.scenario(tokens=["Hi"])

    async def healthz() -> None:
        await fetch(load.HOST, run.port, "GET", "/healthz", headers=load.PROXY_HEADERS)

    async def chat_page() -> None:
        await fetch(load.HOST, run.port, "GET", f"/c/{conversation}/", headers=browser.headers())

    async def open_live_stream() -> None:
        stream = await open_stream(load.HOST, run.port, "GET", waiting,
                                   headers=browser.headers())
        stream.close()

    async def finished_stream() -> None:
        await browser.read_to_end(f"/m/{finished}/stream", timeout=30)

    async def exchange() -> None:
        path = await browser.send(exchanges, "hello")
        await browser.read_to_end(html.unescape(path), timeout=30)

    async def bare_post() -> None:
        response = await fetch(load.HOST, run.port, "POST", "/bench/floor/post",
                               headers=browser.headers(htmx=True), body=b"")
        if response.status != 204:
            raise ProtocolError(f"bare POST: HTTP {response.status}")

    async def bare_stream() -> None:
        record = await browser.read_to_end("/bench/floor/stream", timeout=30)
        if not record.done:
            raise ProtocolError("bare stream: no done event")

    kinds = [("healthz", healthz), ("chat page", chat_page),
             ("open a live stream", open_live_stream),
             ("stream of a finished reply", finished_stream),
             ("POST + 1-token reply streamed", exchange)]
    if floor:
        kinds += [("Django floor: bare POST", bare_post),
                  ("Django floor: bare stream", bare_stream)]
    results = {}
    for name, one in kinds:
        for _ in range(5):  # warm-up
            await one()
        walls = []
        spy = pyspy.start(run.server.pid, run.workdir) if profile else None
        if spy is not None:
            await asyncio.sleep(1.0)  # py-spy attaches
        cpu = sum(environment.cpu_seconds(pid) for pid in run.server.pids())
        for _ in range(n):
            started = time.perf_counter()
            await one()
            walls.append(time.perf_counter() - started)
        await asyncio.sleep(0.5)  # let background work of the last request (flushes) land
        cpu = sum(environment.cpu_seconds(pid) for pid in run.server.pids()) - cpu
        results[name] = {
            "server_cpu_ms": round(cpu / n * 1000, 2),
            "wall_ms_p50": round(percentile(walls, 50) * 1000, 2),
            "wall_ms_p95": round(percentile(walls, 95) * 1000, 2),
        }
        print(f"{name:32} server CPU {results[name]['server_cpu_ms']:7.2f} ms/request   "
              f"wall p50 {results[name]['wall_ms_p50']:7.2f} ms  p95 "
              f"{results[name]['wall_ms_p95']:7.2f} ms", flush=True)
        if spy is not None:
            profiled = pyspy.finish(spy)
            results[name]["by_layer_pct"] = profiled.get("by_layer_pct")
            results[name]["unattributed_pct"] = profiled.get("unattributed_pct")
            for layer, pct in profiled.get("by_layer_pct") or []:
                print(f"    {pct:5.1f}%  {layer}")
            for frames, pct in profiled.get("unattributed_pct") or []:
                print(f"           {pct:5.1f}%  unattributed: {frames}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="requests of each kind (200)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--settings", default="chatsite.settings")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--django-floor", action="store_true",
                        help="also time the least a reply's two requests cost in Django "
                             "(bench.variants.django_floor)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy; print where each kind's CPU goes")
    parser.add_argument("--models", type=int, default=0,
                        help="the key lists this many chat models (0: the fake's three); the "
                             "chat page offers each in its model list")
    options = parser.parse_args()
    if options.django_floor:
        if options.settings != parser.get_default("settings"):
            parser.error("--django-floor runs its own settings (bench.variants.django_floor); "
                         "leave out --settings")
        options.settings = "bench.variants.django_floor"
    args = load.parse_args(["--idle", "0", "--streams", "1", "--settings", options.settings,
                            "--models", str(options.models)]
                           + (["--database-url", options.database_url]
                              if options.database_url else []))
    load.raise_file_limit()
    run = load.Run(args)
    try:
        run.start()
        print(f"{run.database.kind}, {options.settings}, sum(range(1000)) "
              f"{load.python_speed_us()} us", flush=True)
        results = asyncio.run(asyncio.wait_for(measure(run, options.n, options.profile,
                                                     options.django_floor), 900))
    finally:
        run.stop()
    if options.out:
        options.out.write_text(json.dumps({
            "database": run.database.kind, "settings": options.settings, "n": options.n,
            "results": results,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
