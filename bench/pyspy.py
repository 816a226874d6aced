"""py-spy around the chatsite phase: where one worker's time goes, by thread kind and function.

py-spy is not a project dependency: ``.venv/bin/pip install py-spy`` to use ``--profile``.
Samples are taken from the thread holding the GIL only (``--gil``): where Python spends CPU.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE = 250  # samples per second
THREAD = re.compile(r"thread \(\d+\): ?(.*)")
FRAME = re.compile(r"(.*) \((.*):\d+\)$")


@dataclass
class Spy:
    process: subprocess.Popen
    output: Path


def _binary() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pid: int, workdir: Path) -> Spy | None:
    binary = _binary()
    if binary is None:
        print("--profile: py-spy is not installed (.venv/bin/pip install py-spy)",
              file=sys.stderr)
        return None
    output = workdir / f"py-spy-{pid}.txt"
    process = subprocess.Popen(
        [binary, "record", "-p", str(pid), "-r", str(RATE), "-f", "raw", "-o", str(output),
         "--nonblocking", "--threads", "--gil"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return Spy(process, output)


# Where a sample's CPU went, by the first of these its stack passes through (in this order): the
# reply engine's threads, the views, then the layers under every request.
LAYERS = [
    ("reply generation (runner thread)", "replies/runner.py"),
    ("reply flusher and watchdog", "replies/flusher.py"),
    ("message POST view", "message_create"),
    ("chat page view", "_chat_page"),
    ("stream view: access check", "_stream_reader"),
    ("stream view: reading the reply, final HTML", "run_sync"),
    ("stream view: events", "replies/stream.py"),
    ("other views", "conversations/views.py"),
    ("session and user (middleware)", "django/contrib/auth"),
    ("Django's request handling and middleware", "django/core/handlers"),
    ("uvicorn (HTTP, sending)", "uvicorn/"),
]


OTHER = "unattributed (event loop, idle, stacks not unwound to a layer)"


def layer_of(stack: str) -> str:
    return next((name for name, marker in LAYERS if marker in stack), OTHER)


def thread_kind(name: str) -> str:
    """Group thread names: generation_12 → generation, ThreadPoolExecutor-3_0 → executor."""
    if name.startswith("ThreadPoolExecutor"):
        return "sync_to_async executor"
    return re.sub(r"[_-]?\d+$", "", name) or "?"


def finish(spy: Spy) -> dict:
    """Stop py-spy and summarise its samples."""
    spy.process.send_signal(signal.SIGINT)
    try:
        spy.process.wait(30)
    except subprocess.TimeoutExpired:
        spy.process.kill()
        spy.process.wait(5)
    if not spy.output.exists():
        return {"error": "py-spy wrote nothing (ptrace not permitted?)"}
    by_thread: Counter[str] = Counter()
    by_layer: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    unplaced: Counter[str] = Counter()  # the innermost frames of the samples in no layer
    total = 0
    for line in spy.output.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        layer = layer_of(stack)
        by_layer[layer] += count
        frames = stack.split(";")
        thread = THREAD.match(frames[0])
        if thread:
            by_thread[thread_kind(thread.group(1))] += count
            frames = frames[1:]
        names = []
        for frame in frames:
            match = FRAME.match(frame)
            names.append(f"{match.group(1)} ({match.group(2)})" if match else frame)
        if names:
            own[names[-1]] += count
            if layer == OTHER:
                unplaced[" < ".join(reversed(names[-3:]))] += count
        for name in set(names):
            inclusive[name] += count

    def share(counter: Counter[str], n: int) -> list[list]:
        return [[name, round(100 * c / max(total, 1), 1)] for name, c in counter.most_common(n)]

    return {
        "samples": total,
        "rate": RATE,
        "raw": str(spy.output),
        "by_thread_pct": share(by_thread, 12),
        "by_layer_pct": share(by_layer, len(LAYERS) + 1),
        "self_pct": share(own, 30),
        "unattributed_pct": share(unplaced, 8),
        "inclusive_pct": share(inclusive, 60),
    }
