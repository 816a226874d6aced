"""The floor: the least a relay of chat completions to a browser can do, as an ASGI app.

``GET /relay?upstream=<base URL>`` posts one streaming chat completion with requests, parses it
with sseclient-py in a thread, and streams each piece of text to the client as an SSE ``delta``
event — no database, no session, no escaping beyond the wire format. chatsite is measured against
it in the same run (``bench/compare.py``): what chatsite costs beyond this is its own.

    uvicorn bench.relay_floor:app --port 9000
"""

from __future__ import annotations

import asyncio
import json
import threading
from urllib.parse import parse_qs

import requests
import sseclient

BODY = {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "floor"}]}


def _pump(base_url: str, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
    try:
        with requests.post(f"{base_url}/chat/completions", json=BODY, stream=True, timeout=60,
                           headers={"Authorization": "Bearer sk-floor"}) as response:
            for event in sseclient.SSEClient(response.iter_content(chunk_size=None)).events():
                if event.data == "[DONE]":
                    break
                for choice in json.loads(event.data).get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        loop.call_soon_threadsafe(queue.put_nowait, text)
    finally:
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    upstream = parse_qs(scope["query_string"].decode()).get("upstream", [""])[0]
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    threading.Thread(target=_pump, args=(upstream, loop, queue), daemon=True).start()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    offset = 0
    while (text := await queue.get()) is not None:
        offset += len(text)
        data = "\ndata: ".join(text.split("\n"))
        await send({"type": "http.response.body", "more_body": True,
                    "body": f"event: delta\nid: {offset}\ndata: {data}\n\n".encode()})
    await send({"type": "http.response.body", "body": b"event: done\ndata: \n\n"})
