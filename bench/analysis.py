"""What the load generator recorded, turned into figures: per stream, then per path.

Each token the fake upstream sends carries its send time in its text (``Scenario.stamp_content``),
so a client that reads the tokens — straight from the fake, or through chatsite — can tell, per
token, how long it took to arrive, and whether any token went missing or came twice.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from devtools.fake_upstream import STAMP_MARK

STAMPED = re.compile(f"([^{STAMP_MARK}]*){STAMP_MARK}(\\d+\\.\\d+){STAMP_MARK}")


@dataclass
class StreamRecord:
    """One stream as a client saw it."""

    path: str  # "direct" (straight to the fake) or "chatsite"
    slot: int
    round: int
    started: float  # request start (chatsite: the POST of the message)
    posted: float | None = None  # chatsite: the POST's response arrived
    opened: float | None = None  # the event stream's response head arrived
    pieces: list[tuple[float, str]] = field(default_factory=list)  # (received, text)
    done: bool = False  # chatsite: the done event; direct: data: [DONE]
    final: str = ""  # chatsite: the done event's HTML (the whole reply, rendered)
    error: str | None = None
    message_id: int | None = None


@dataclass
class StreamFigures:
    ttft: float | None
    delays: list[float]  # every token: received - sent
    live_delays: list[float]  # tokens sent after the stream was open (no catch-up)
    intervals: list[float]  # between the fake's sends of consecutive tokens
    lost: int  # neither streamed nor in the final HTML
    unstreamed: int  # not streamed, but in the final HTML (the stream opened too late)
    duplicated: int
    reordered: bool
    stray_text: int  # characters outside any stamped token


def analyse(record: StreamRecord, expected: list[str]) -> StreamFigures:
    text = "".join(piece for _, piece in record.pieces)
    ends, total = [], 0
    for _, piece in record.pieces:
        total += len(piece)
        ends.append(total)
    tokens, sends, delays, live = [], [], [], []
    covered = 0
    for match in STAMPED.finditer(text):
        covered += len(match.group(0))
        sent = float(match.group(2))
        received = record.pieces[bisect_left(ends, match.end())][0]
        tokens.append(match.group(1))
        sends.append(sent)
        delays.append(received - sent)
        if record.opened is not None and sent >= record.opened:
            live.append(received - sent)
    got, want = Counter(tokens), Counter(expected)
    missing = want - got
    in_final = Counter(t for t in missing if t.strip() in record.final)
    first = next((at for at, piece in record.pieces if piece), None)
    return StreamFigures(
        ttft=None if first is None else first - record.started,
        delays=delays,
        live_delays=live,
        intervals=[b - a for a, b in zip(sends, sends[1:], strict=False)],
        lost=sum((missing - in_final).values()),
        unstreamed=sum(in_final.values()),
        duplicated=sum((got - want).values()),
        reordered=[t for t in tokens if t in want] != [t for t in expected if t in got],
        stray_text=len(text) - covered,
    )


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), linearly interpolated; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values: list[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    """p50/p95/p99/max of ``values`` times ``scale`` (seconds to ms by default)."""
    out: dict[str, float | int | None] = {"n": len(values)}
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100)):
        value = percentile(values, q)
        out[name] = None if value is None else round(value * scale, 3)
    return out


def summarise(records: list[StreamRecord], expected: list[str]) -> dict:
    """Figures of all streams of one path."""
    figures = [analyse(record, expected) for record in records]
    complete = [
        r for r, f in zip(records, figures, strict=True)
        if r.done and not r.error and f.lost + f.unstreamed + f.duplicated == 0
    ]
    return {
        "streams": len(records),
        "complete": len(complete),
        "errors": sum(1 for r in records if r.error),
        "error_examples": sorted({r.error for r in records if r.error})[:5],
        "not_done": sum(1 for r in records if not r.done),
        "tokens_expected": len(expected) * len(records),
        "tokens_received": sum(len(f.delays) for f in figures),
        "lost": sum(f.lost for f in figures),
        "unstreamed": sum(f.unstreamed for f in figures),
        "streams_without_delta": sum(1 for r in records if not r.pieces),
        "duplicated": sum(f.duplicated for f in figures),
        "reordered_streams": sum(1 for f in figures if f.reordered),
        "stray_chars": sum(f.stray_text for f in figures),
        "ttft_ms": distribution([f.ttft for f in figures if f.ttft is not None]),
        "post_ms": distribution([r.posted - r.started for r in records if r.posted]),
        "open_ms": distribution([r.opened - (r.posted or r.started) for r in records
                                 if r.opened]),
        "first_after_open_ms": distribution([
            r.pieces[0][0] - r.opened for r in records if r.opened and r.pieces
        ]),
        "delay_ms": distribution([d for f in figures for d in f.delays]),
        "live_delay_ms": distribution([d for f in figures for d in f.live_delays]),
        "send_interval_ms": distribution([i for f in figures for i in f.intervals]),
    }

