"""The benchmark's throwaway world: data directory, database, fake upstream, chatsite servers.

Everything lives in a temporary directory, or (PostgreSQL) in a database created for the run and
dropped after it. Processes are started here and stopped here, by their own ids.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# Row writes to conversations_message, one log row each, so they can be counted per reply.
SQLITE_WRITE_LOG = """
CREATE TABLE bench_writes (message_id INTEGER, op TEXT);
CREATE TRIGGER bench_message_insert AFTER INSERT ON conversations_message
BEGIN INSERT INTO bench_writes VALUES (NEW.id, 'i'); END;
CREATE TRIGGER bench_message_update AFTER UPDATE ON conversations_message
BEGIN INSERT INTO bench_writes VALUES (NEW.id, 'u'); END;
"""
POSTGRES_WRITE_LOG = """
CREATE TABLE bench_writes (message_id bigint, op text);
CREATE FUNCTION bench_log_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO bench_writes VALUES (NEW.id, lower(left(TG_OP, 1))); RETURN NULL; END $$;
CREATE TRIGGER bench_message_write AFTER INSERT OR UPDATE ON conversations_message
FOR EACH ROW EXECUTE FUNCTION bench_log_write();
"""

SEED = """
import json, os
from django.contrib.auth import get_user_model
from conversations.models import ApiKey
get_user_model().objects.create_user("bench", password=os.environ["BENCH_PASSWORD"])
print("BENCH " + json.dumps({"key": ApiKey.objects.get(name="bench").pk}))
"""


class Database:
    """SQLite in the work directory, or a fresh database on the given PostgreSQL server."""

    def __init__(self, workdir: Path, server_url: str | None) -> None:
        self.server_url = server_url
        if server_url is None:
            self.kind = "sqlite"
            self.path = workdir / "db.sqlite3"
            self.url = f"sqlite:///{self.path}"
            self.name = str(self.path)
            return
        import psycopg

        self.kind = "postgresql"
        parts = urllib.parse.urlsplit(server_url)
        self.name = f"chatsite_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{self.name}"))
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def _connect(self):
        if self.kind == "sqlite":
            return sqlite3.connect(self.path, timeout=30, isolation_level=None)
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def install_write_log(self) -> None:
        conn = self._connect()
        try:
            if self.kind == "sqlite":
                conn.executescript(SQLITE_WRITE_LOG)
            else:
                conn.execute(POSTGRES_WRITE_LOG)
        finally:
            conn.close()

    def writes(self, message_ids: list[int]) -> dict[str, int]:
        """Return inserts and updates of the given messages, from the trigger log."""
        if not message_ids:
            return {"i": 0, "u": 0}
        conn = self._connect()
        try:
            marks = ",".join(str(int(i)) for i in message_ids)
            rows = conn.execute(
                f"SELECT op, count(*) FROM bench_writes WHERE message_id IN ({marks}) GROUP BY op"
            ).fetchall()
        finally:
            conn.close()
        counts = {"i": 0, "u": 0}
        counts.update({op: int(n) for op, n in rows})
        return counts

    def writes_total(self) -> dict[str, int]:
        """Return all inserts and updates of messages logged so far."""
        conn = self._connect()
        try:
            rows = conn.execute("SELECT op, count(*) FROM bench_writes GROUP BY op").fetchall()
        finally:
            conn.close()
        counts = {"i": 0, "u": 0}
        counts.update({op: int(n) for op, n in rows})
        return counts

    def table_stats(self) -> dict[str, int] | None:
        """PostgreSQL's own counters for the message table (they lag by up to a second)."""
        if self.kind != "postgresql":
            return None
        conn = self._connect()
        try:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = 'conversations_message'"
            ).fetchone()
            database = conn.execute(
                "SELECT sessions, xact_commit + xact_rollback FROM pg_stat_database "
                "WHERE datname = current_database()"
            ).fetchone()
        finally:
            conn.close()
        return {"n_tup_ins": row[0], "n_tup_upd": row[1], "n_tup_hot_upd": row[2],
                "sessions": database[0], "transactions": database[1]}

    def reply_statuses(self) -> dict[str, int]:
        """Count assistant messages by final status (and error type), e.g. ``error:...``."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT status, error_type, count(*) FROM conversations_message "
                "WHERE role = 'assistant' GROUP BY status, error_type"
            ).fetchall()
            usage = conn.execute(
                "SELECT count(*), coalesce(sum(requests), 0) FROM conversations_usagedaily"
            ).fetchone()
        finally:
            conn.close()
        counts = {f"{status}:{kind}" if kind else status: int(n) for status, kind, n in rows}
        # Every finished reply adds 1 to one UsageDaily row; all of a run's replies share one
        # day, user, key and model, so there should be one row whose requests = replies.
        counts["usage_daily_rows"], counts["usage_daily_requests"] = int(usage[0]), int(usage[1])
        return counts

    def drop(self) -> None:
        if self.kind != "postgresql":
            return
        import psycopg

        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class FakeProcess:
    """``bench/fake_server.py`` as a child process."""

    def __init__(self, log: Path) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [PYTHON, str(ROOT / "bench" / "fake_server.py")], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1,
        )
        self._lock = threading.Lock()
        self.port = int(self._read()["port"])
        self.pid = self.process.pid

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fake upstream process exited; see its log")
        return json.loads(line)

    def command(self, cmd: str, **fields) -> dict:
        with self._lock:
            self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
            self.process.stdin.flush()
            return self._read()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.command("stop")
                self.process.wait(10)
            except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)
        self._log.close()


# What scripts/run sets for the server besides chatsite's settings (the floor runs with it too).
PROCESS_ENV = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}


def server_env(
    *, workdir: Path, database_url: str, redis_url: str, debug: bool, extra: dict[str, str]
) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CHATSITE_", "DATABASE_URL", "REDIS_URL"))
    }
    env.update({
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DJANGO_DEBUG": "true" if debug else "false",
        # Production settings behind a TLS-terminating proxy, which the load generator plays
        # (it sends X-Forwarded-Proto: https from 127.0.0.1).
        "CHATSITE_PRODUCTION": "false" if debug else "true",
        "DJANGO_BEHIND_TLS_PROXY": "false" if debug else "true",
        "CHATSITE_TRUSTED_PROXIES": "127.0.0.1",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "CHATSITE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "CHATSITE_DATA_DIR": str(workdir / "data"),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHATSITE_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        **PROCESS_ENV,
        **extra,
    })
    return env


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, input=stdin, capture_output=True,
        text=True, timeout=300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def prepare(env: dict[str, str], database: Database, fake_url: str, password: str) -> int:
    """Migrate, add the API key and the user; return the key's id."""
    manage(env, "migrate", "--noinput")
    database.install_write_log()
    add = ["apikey", "add", "--name", "bench", "--base-url", fake_url]
    if "--everyone" in manage(env, "apikey", "add", "--help"):
        add.append("--everyone")  # keys are granted to teams or users; the bench user is neither
    manage(env, *add, stdin=f"sk-bench-{secrets.token_hex(16)}\n")
    output = manage({**env, "BENCH_PASSWORD": password}, "shell", "-c", SEED)
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return int(json.loads(line[6:])["key"])
    raise RuntimeError(f"seeding failed: {output}")


class Server:
    """``uvicorn chatsite.asgi:application`` with ``workers`` worker processes."""

    def __init__(self, env: dict[str, str], port: int, workers: int, log: Path,
                 python: str = PYTHON) -> None:
        self.port = port
        self.workers = workers
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [python, "-m", "uvicorn", "chatsite.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--lifespan", "off",
             "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.log_path = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The uvicorn process and its worker children."""
        return [self.pid, *children(self.pid)]

    def worker_pids(self) -> list[int]:
        if self.workers == 1:
            return [self.pid]
        # Not multiprocessing's resource tracker, which the supervisor also starts.
        return [pid for pid in children(self.pid) if "resource_tracker" not in cmdline(pid)]

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                for pid in self.pids():
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.process.wait(10)
        self._log.close()


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process, from /proc/<pid>/status."""
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "Threads"):
                values[name] = int(rest.split()[0])
    return values


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def machine_busy_seconds() -> float:
    """CPU time every process on the machine has used since boot (all cores)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def machine_steal_seconds() -> float:
    """CPU time the hypervisor gave to other machines while this one wanted to run."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    return fields[7] / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    return _cpu(f"/proc/{pid}")


def loop_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process's main thread: for uvicorn, its event loop
    (what the other threads spent is the rest of ``cpu_seconds``)."""
    return _cpu(f"/proc/{pid}/task/{pid}")


def _cpu(where: str) -> float:
    try:
        fields = _stat(where)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _stat(where: str) -> list[str]:
    """The fields after the command name of ``where``/stat (a process or a thread's directory)."""
    with open(f"{where}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def service_cpu_seconds(name: str) -> float:
    """CPU time of a system service (``postgres``, ``redis-server``): its main processes, their
    live children and the children they have reaped (every database, not only the run's)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != name:
                    continue
            fields = _stat(f"/proc/{int(entry)}")
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        if int(fields[1]) == 1:  # the main process: add what its exited children used
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / CLOCK_TICKS
    return total


def server_stack(pid: int) -> dict[str, bool]:
    """Which optional accelerators a uvicorn worker has loaded (uvicorn's ``--loop auto`` and
    ``--http auto`` use uvloop and httptools when importable), from /proc/<pid>/maps."""
    with open(f"/proc/{pid}/maps") as handle:
        maps = handle.read()
    return {"uvloop": "/uvloop/" in maps, "httptools": "/httptools/" in maps}


def memory_breakdown(pid: int) -> dict[str, int]:
    """Resident kB of a process by kind of mapping, from /proc/<pid>/smaps."""
    kinds = {"thread_stacks_kb": 0, "anonymous_kb": 0, "files_kb": 0}
    size = 0
    path = ""
    with open(f"/proc/{pid}/smaps") as handle:
        for line in handle:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                path = parts[5] if len(parts) > 5 else ""
            elif first == "Size:":
                size = int(line.split()[1])
            elif first == "Rss:":
                rss = int(line.split()[1])
                if path and not path.startswith("["):
                    kinds["files_kb"] += rss
                elif not path and size == 8192:  # glibc's default thread stack
                    kinds["thread_stacks_kb"] += rss
                else:
                    kinds["anonymous_kb"] += rss
    return kinds


@dataclass
class Sample:
    at: float
    rss_kb: int  # summed over the server's processes
    hwm_kb: int  # summed peaks
    pss_kb: int
    threads: int
    fds: int
    db_connections: int = 0  # PostgreSQL backends on the run's database (not the sampler's)


@dataclass
class Sampler:
    """Samples the server's memory, threads, descriptors and database connections."""

    server: Server
    database: Database
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def sample(self) -> Sample | None:
        rss = hwm = pss = threads = fds = 0
        try:
            for pid in self.server.pids():
                status = status_kb(pid)
                rss += status.get("VmRSS", 0)
                hwm += status.get("VmHWM", 0)
                threads += status.get("Threads", 0)
                pss += pss_kb(pid)
                fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            return None
        sample = Sample(time.time(), rss, hwm, pss, threads, fds, self._db_connections())
        self.samples.append(sample)
        return sample

    def _db_connections(self) -> int:
        if self.database.kind != "postgresql":
            return 0
        try:
            if self._conn is None:
                self._conn = self.database._connect()
            return self._conn.execute(
                "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"
            ).fetchone()[0]
        except Exception:  # the server may be out of connections: try again next time
            self._conn = None
            return -1

    def _run(self) -> None:
        self._conn = None
        while not self._stop.wait(self.interval):
            self.sample()
        if self._conn is not None:
            self._conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def peak(self, start: float, end: float) -> dict[str, int]:
        window = [s for s in self.samples if start <= s.at <= end] or self.samples[-1:]
        return {
            "rss_kb": max(s.rss_kb for s in window),
            "hwm_kb": max(s.hwm_kb for s in window),
            "pss_kb": max(s.pss_kb for s in window),
            "threads": max(s.threads for s in window),
            "fds": max(s.fds for s in window),
            "db_connections": max(s.db_connections for s in window),
        }
