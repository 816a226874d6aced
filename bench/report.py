"""The run's summary: one JSON document, a Markdown version of it, and the table printed."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

# Other processes (another test run on the machine) using more than this many cores during a
# measured phase make its latencies unrepresentative: the report says so.
NOISE_CORES = 0.25
TARGETS = {
    "added_live_delay_p50_ms": 2.0,
    "added_live_delay_p99_ms": 20.0,
    "added_ttft_p50_ms": 10.0,
    "memory_mb": 600.0,
}


def db_writes(per_reply: dict[str, int], replies: int, before: dict[str, int],
              after: dict[str, int], stats_before: dict | None, stats_after: dict | None,
              kind: str) -> dict:
    """Row writes to conversations_message during the chatsite phase."""
    window = {op: after[op] - before[op] for op in ("i", "u")}
    out = {
        "how": "AFTER INSERT/UPDATE triggers on conversations_message log each row write",
        "replies": replies,
        "reply_row_inserts_per_reply": round(per_reply["i"] / max(replies, 1), 2),
        "reply_row_updates_per_reply": round(per_reply["u"] / max(replies, 1), 2),
        "reply_row_writes_per_reply": round((per_reply["i"] + per_reply["u"]) / max(replies, 1), 2),
        "all_message_writes_in_phase": window,
        "all_message_writes_per_reply": round(sum(window.values()) / max(replies, 1), 2),
    }
    if stats_before and stats_after:
        delta = {name: stats_after[name] - stats_before[name] for name in stats_after}
        out["pg_stat_user_tables"] = delta
        out["pg_stat_writes_per_reply"] = round(
            (delta["n_tup_ins"] + delta["n_tup_upd"]) / max(replies, 1), 2
        )
        # Connections opened and transactions run on the run's database (includes the
        # benchmark's own few counter reads).
        out["pg_connections_per_reply"] = round(delta["sessions"] / max(replies, 1), 2)
        out["pg_transactions_per_reply"] = round(delta["transactions"] / max(replies, 1), 2)
    return out


def _phase(run, start: str, end: str) -> dict:
    wall = run.marks[end] - run.marks[start]
    cpu = {who: round(run.cpu[end][who] - run.cpu[start][who], 2) for who in run.cpu[end]}
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": cpu,
        "cpu_cores_used": {who: round(v / wall, 2) if wall else None for who, v in cpu.items()},
        "memory": run.sampler.peak(run.marks[start], run.marks[end]),
    }


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def build(run, args, machine: dict, log: str, elapsed: float, command: str) -> dict:
    result = run.result
    chatsite, direct = result["chatsite"], result["direct"]
    phases = {
        "warm-up (conversations)": _phase(run, "up", "conversations"),
        "idle streams opening": _phase(run, "conversations", "idle_open"),
        "direct baseline": _phase(run, "idle_open", "direct_done"),
        "chatsite": _phase(run, "chatsite_start", "chatsite_done"),
        "idle hold + checks": _phase(run, "chatsite_done", "end"),
    }
    first = run.sampler.samples[0] if run.sampler.samples else None
    last = run.sampler.samples[-1] if run.sampler.samples else None
    memory = {
        "at_start_rss_mb": _mb(first.rss_kb) if first else None,
        "idle_only_peak_rss_mb": _mb(phases["direct baseline"]["memory"]["rss_kb"]),
        "idle_plus_active_peak_rss_mb": _mb(phases["chatsite"]["memory"]["rss_kb"]),
        "idle_plus_active_peak_pss_mb": _mb(phases["chatsite"]["memory"]["pss_kb"]),
        "run_peak_hwm_mb": _mb(last.hwm_kb) if last else None,
        "peak_threads": max((s.threads for s in run.sampler.samples), default=0),
        "peak_fds": max((s.fds for s in run.sampler.samples), default=0),
        "peak_db_connections": max((s.db_connections for s in run.sampler.samples), default=0),
        "idle_open_breakdown_kb": _sum_breakdown(getattr(run, "memory_idle", {})),
    }
    delivered = chatsite["tokens_received"]
    server_cpu = phases["chatsite"]["cpu_seconds"]["server"]
    added = {
        "ttft_ms": _added(chatsite["ttft_ms"], direct["ttft_ms"]),
        "live_delay_ms": _added(chatsite["live_delay_ms"], direct["delay_ms"]),
        "delay_ms": _added(chatsite["delay_ms"], direct["delay_ms"]),
    }
    summary = {
        "label": args.label,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "machine": machine,
        "config": {
            "streams": args.streams, "chunks": args.chunks, "rate": args.rate,
            "rounds": args.rounds, "ramp": args.ramp, "first_token_delay": args.first_token_delay,
            "idle": args.idle, "idle_viewers": args.idle_viewers, "idle_replies": run.idle_replies,
            "workers": args.workers, "database": run.database.kind,
            "redis": bool(args.redis_url), "debug": args.debug, "settings": args.settings,
            "server_python": args.server_python,
            "server_stack": run.stack,
            "server_env": {k: v for k, v in run.server_extra_env().items()},
        },
        "elapsed_seconds": round(elapsed, 1),
        "phases": phases,
        "direct": direct,
        "chatsite": chatsite,
        "added": added,
        "idle": result["idle"],
        "memory": memory,
        "server_cpu_us_per_token": round(server_cpu / delivered * 1e6, 1) if delivered else None,
        "server_cpu_ms_per_reply": round(server_cpu / chatsite["streams"] * 1e3, 2)
        if chatsite["streams"] else None,
        "db_writes": result["db_writes"],
        "server_log": _log_summary(log),
        "profile": result["profile"],
        "reply_statuses": result.get("reply_statuses", {}),
    }
    summary["targets"] = _targets(summary, args)
    busy = {name: phases[name]["cpu_cores_used"]["others"]
            + phases[name]["cpu_cores_used"]["steal"]
            for name in ("direct baseline", "chatsite")}
    summary["contaminated"] = {name: v for name, v in busy.items() if v and v > NOISE_CORES}
    return summary


def _sum_breakdown(by_pid: dict[int, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for kinds in by_pid.values():
        for kind, kb in kinds.items():
            total[kind] = total.get(kind, 0) + kb
    return total


def _added(chatsite: dict, direct: dict) -> dict:
    out = {}
    for key in ("p50", "p95", "p99"):
        a, b = chatsite.get(key), direct.get(key)
        out[key] = None if a is None or b is None else round(a - b, 3)
    return out


def _stack(stack: dict[str, bool]) -> str:
    loop = "uvloop" if stack.get("uvloop") else "asyncio loop"
    http = "httptools" if stack.get("httptools") else "h11"
    return f"{loop} + {http}" if stack else "server stack unknown"


def _log_summary(log: str) -> dict:
    lines = log.splitlines()
    interesting = [line for line in lines if any(
        word in line for word in ("ERROR", "Traceback", "WARNING", "Error", "error")
    )]
    # "package.SomeError: message" lines end tracebacks: count them by exception type.
    exceptions = Counter(
        match.group(1) for line in lines if (match := _EXCEPTION_LINE.match(line))
    )
    return {"lines": len(lines), "problem_lines": len(interesting), "examples": interesting[:8],
            "exceptions": dict(exceptions.most_common(12))}


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Detected|Timeout|Exhausted)):")


def _check(value, limit) -> str:
    if value is None:
        return "n/a"
    return "met" if value <= limit else f"MISSED by {value - limit:.1f}"


def _targets(summary: dict, args) -> list[dict]:
    added, chatsite = summary["added"], summary["chatsite"]
    integrity = chatsite["lost"] + chatsite["duplicated"] + chatsite["errors"] + \
        chatsite["not_done"] + chatsite["reordered_streams"] + chatsite["unstreamed"]
    memory = summary["memory"]["run_peak_hwm_mb"]
    idle = summary["idle"]
    rows = [
        ("added chunk delay p50 (ms)", added["live_delay_ms"]["p50"],
         TARGETS["added_live_delay_p50_ms"]),
        ("added chunk delay p99 (ms)", added["live_delay_ms"]["p99"],
         TARGETS["added_live_delay_p99_ms"]),
        ("added time to first token p50 (ms)", added["ttft_ms"]["p50"],
         TARGETS["added_ttft_p50_ms"]),
        ("chunks lost, duplicated, reordered or not streamed; failed streams", integrity, 0),
        (f"server peak memory, {args.idle} idle + {args.streams} active (MB)", memory,
         TARGETS["memory_mb"]),
        ("idle streams not healthy at the end", idle["requested"] - idle["healthy"]
         if idle["requested"] else None, 0),
    ]
    return [{"target": name, "value": value, "limit": limit, "verdict": _check(value, limit)}
            for name, value, limit in rows]


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _rows(summary: dict) -> list[tuple[str, str, str, str]]:
    d, c, a = summary["direct"], summary["chatsite"], summary["added"]
    rows = []
    for label, key, added_key, direct_key in (
        ("time to first token", "ttft_ms", "ttft_ms", "ttft_ms"),
        ("chunk delay, live chunks", "live_delay_ms", "live_delay_ms", "delay_ms"),
        ("chunk delay, all chunks", "delay_ms", "delay_ms", "delay_ms"),
    ):
        for q in ("p50", "p95", "p99"):
            rows.append((f"{label} {q} (ms)", _fmt(d[direct_key][q]), _fmt(c[key][q]),
                         _fmt(a[added_key][q])))
        rows.append((f"{label} max (ms)", _fmt(d[direct_key]["max"]), _fmt(c[key]["max"]), ""))
    for label, key in (("  POST answered (ms)", "post_ms"), ("  then stream head (ms)", "open_ms"),
                       ("  then first delta (ms)", "first_after_open_ms")):
        rows.append((f"{label} p50/p99", f"{_fmt(d[key]['p50'])}/{_fmt(d[key]['p99'])}",
                     f"{_fmt(c[key]['p50'])}/{_fmt(c[key]['p99'])}", ""))
    rows.append(("fake's send interval p50/p99 (ms)",
                 f"{_fmt(d['send_interval_ms']['p50'])}/{_fmt(d['send_interval_ms']['p99'])}",
                 f"{_fmt(c['send_interval_ms']['p50'])}/{_fmt(c['send_interval_ms']['p99'])}",
                 ""))
    for label, key in (("streams", "streams"), ("complete", "complete"), ("errors", "errors"),
                       ("without done/[DONE]", "not_done"), ("tokens received", "tokens_received"),
                       ("tokens lost", "lost"),
                       ("tokens only in the final HTML", "unstreamed"),
                       ("streams without any delta", "streams_without_delta"),
                       ("tokens duplicated", "duplicated"),
                       ("streams reordered", "reordered_streams")):
        rows.append((label, _fmt(d[key]), _fmt(c[key]), ""))
    return rows


def table(summary: dict) -> str:
    config = summary["config"]
    lines = [
        f"chatsite load: {config['streams']} streams x {config['rounds']} rounds, "
        f"{config['chunks']} chunks at {config['rate']:g}/s; {config['idle']} idle streams; "
        f"{config['workers']} worker(s), {config['database']}"
        f"{', redis' if config['redis'] else ''}, {'DEBUG' if config['debug'] else 'production'}"
        f"; {_stack(config.get('server_stack') or {})}",
        "",
        f"{'':44} {'direct':>12} {'chatsite':>12} {'added':>10}",
    ]
    for label, direct, chatsite, added in _rows(summary):
        lines.append(f"{label:44} {direct:>12} {chatsite:>12} {added:>10}")
    memory, idle, writes = summary["memory"], summary["idle"], summary["db_writes"]
    lines += [
        "",
        f"server memory: start {memory['at_start_rss_mb']} MB, idle streams open "
        f"{memory['idle_only_peak_rss_mb']} MB, idle+active {memory['idle_plus_active_peak_rss_mb']}"
        f" MB (PSS {memory['idle_plus_active_peak_pss_mb']}), run peak (sum of VmHWM) "
        f"{memory['run_peak_hwm_mb']} MB; threads up to {memory['peak_threads']}, "
        f"fds up to {memory['peak_fds']}"
        + (f", PostgreSQL connections up to {memory['peak_db_connections']}"
           if summary["config"]["database"] == "postgresql" else ""),
        "with the idle streams open, resident by mapping (kB): " + ", ".join(
            f"{k.removesuffix('_kb')} {v}" for k, v in memory["idle_open_breakdown_kb"].items()),
        f"idle streams: {idle['healthy']}/{idle['requested']} healthy (opened {idle['opened']}, "
        f"errors {idle['errors']}, closed by server {idle['closed_by_server']}, moved "
        f"{idle['got_events']}), keep-alives per stream {idle['keepalives_min']}.."
        f"{idle['keepalives_max']}",
        f"db writes per reply (reply row): {writes['reply_row_writes_per_reply']} "
        f"({writes['reply_row_inserts_per_reply']} insert + "
        f"{writes['reply_row_updates_per_reply']} updates); all message-table writes in the "
        f"phase per reply: {writes['all_message_writes_per_reply']}"
        + (f"; pg_stat: {writes['pg_stat_writes_per_reply']} writes, "
           f"{writes['pg_connections_per_reply']} new connections, "
           f"{writes['pg_transactions_per_reply']} transactions per reply"
           if "pg_stat_writes_per_reply" in writes else ""),
        f"server CPU in the chatsite phase: {summary['server_cpu_ms_per_reply']} ms per reply, "
        f"{summary['server_cpu_us_per_token']} us per streamed token",
        "",
        "phase                         seconds   cores busy: server / fake / client / "
        "postgres / redis / others / hypervisor steal",
    ]
    for name, phase in summary["phases"].items():
        cores = phase["cpu_cores_used"]
        lines.append(f"{name:28} {phase['seconds']:8.1f}   " + " / ".join(
            _fmt(cores[who]) for who in ("server", "fake", "client", "postgres", "redis",
                                         "others", "steal")))
    machine = summary["machine"]
    lines.append(f"machine: {machine['nproc']} cores ({machine['cpu']}), load average at start "
                 f"{machine['loadavg_at_start']}, sum(range(1000)) "
                 f"{machine['python_sum_range_1000_us']} us; revision {machine['revision']}")
    if summary.get("contaminated"):
        lines += ["", "WARNING: other processes on this machine (or the hypervisor) took "
                  + ", ".join(f"{v:.2f} cores during the {k} phase"
                              for k, v in summary["contaminated"].items())
                  + "; latencies of this run are not representative."]
    lines += ["", "targets:"]
    for row in summary["targets"]:
        lines.append(f"  {row['target']:58} {_fmt(row['value']):>10}  (limit {row['limit']}) "
                     f"{row['verdict']}")
    if summary.get("reply_statuses"):
        lines += ["", "assistant messages at the end by status (idle replies included), usage rows: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(summary["reply_statuses"].items()))]
    if summary["server_log"].get("exceptions"):
        lines += ["server log exceptions: " + ", ".join(
            f"{k} {v}" for k, v in summary["server_log"]["exceptions"].items())]
    if summary["server_log"]["problem_lines"]:
        lines += ["", f"server log: {summary['server_log']['problem_lines']} problem lines, e.g."]
        lines += [f"  {line[:160]}" for line in summary["server_log"]["examples"][:4]]
    if summary["chatsite"]["error_examples"]:
        lines += ["", "chatsite stream errors, e.g.:"]
        lines += [f"  {e}" for e in summary["chatsite"]["error_examples"]]
    if summary.get("profile") and "by_thread_pct" in summary["profile"]:
        profile = summary["profile"]
        lines += ["", f"profile ({profile['samples']} samples): by thread "
                  + ", ".join(f"{n} {p}%" for n, p in profile["by_thread_pct"][:6])]
        lines += [f"  self {p:5.1f}%  {n}" for n, p in profile["self_pct"][:15]]
    return "\n".join(lines)


def markdown(summary: dict) -> str:
    lines = [f"# chatsite load run {summary['label'] or ''}".rstrip(), "",
             f"`{summary['command']}` ({summary['when']}, {summary['elapsed_seconds']} s)", "",
             "| | direct | chatsite | added |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _rows(summary)]
    lines += ["", "| target | value | limit | verdict |", "|---|---:|---:|---|"]
    lines += [f"| {r['target']} | {_fmt(r['value'])} | {r['limit']} | {r['verdict']} |"
              for r in summary["targets"]]
    lines += ["", "```", table(summary), "```", ""]
    return "\n".join(lines)


def write(summary: dict, out: Path, label: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    config = summary["config"]
    name = label or (f"{time.strftime('%Y%m%d-%H%M%S')}-{config['database']}"
                     f"-w{config['workers']}{'-redis' if config['redis'] else ''}")
    profile = summary.get("profile") or {}
    if profile.get("raw") and Path(profile["raw"]).exists():
        kept = out / f"{name}.py-spy.txt"
        shutil.copy(profile["raw"], kept)
        profile["raw"] = str(kept)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(summary, indent=2) + "\n")
    md_path.write_text(markdown(summary))
    return [json_path, md_path]
