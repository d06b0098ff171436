"""A real gunicorn serving trialmgr on a loopback port, for concurrency tests and benchmarks.

    with LiveServer(workers=4) as live:
        api = live.client(live.tokens["investigator"])
        api.post("/api/v1/trials/hip-pt-clbp/screenings", {...})
        with live.engine() as engine: ...          # read the live database directly
        assert live.cli("audit", "verify").returncode == 0

Each server gets a fresh instance folder in a temporary directory and its own database: a new SQLite file,
or, when TRIALMGR_TEST_DATABASE_URL names a PostgreSQL server, a throwaway database
`trialmgr_live_<random>` created through that URL and dropped (WITH FORCE) afterwards. The suite's own
database is only used to issue CREATE/DROP DATABASE; its tables are never touched.

The instance is set up through the real CLI (`python -m trialmgr.cli ...`): init, protocol load, one
investigator and one coordinator per site with API tokens, and the allocation list. Independent CLI calls
run in parallel to keep the per-server overhead to a few seconds.

Only 127.0.0.1 is ever bound or contacted; every wait is bounded in time. gunicorn runs in its own process
group so that a SIGKILL after a failed graceful stop takes its workers with it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PROTOCOL = REPO / "protocols" / "hip-pt-clbp.toml"
GUNICORN_CONF = REPO / "deploy" / "gunicorn.conf.py"
TRIAL = "hip-pt-clbp"
SITES = ("DE", "PA", "NC")
HOST = "127.0.0.1"
PG_ENV = "TRIALMGR_TEST_DATABASE_URL"


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (a small race remains; start() retries on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- throwaway PostgreSQL databases ------------------------------------------------------------------------


def create_pg_database(admin_url: str, prefix: str = "trialmgr_live") -> str:
    """CREATE DATABASE <prefix>_<random> through admin_url; returns the new database's URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{secrets.token_hex(6)}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or not name.startswith("trialmgr_"):
        raise ValueError(f"refusing to drop {name!r}: not a throwaway database")
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


# -- a small stdlib HTTP client ----------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class ApiClient:
    """JSON over http.client: one keep-alive connection per thread, all closed by close().

    Thread-safe: share one client between worker threads. A request that fails because the server had
    already closed a reused idle connection is retried once, but only when repeating it cannot create a
    second record (GET, or a request carrying an Idempotency-Key).
    """

    def __init__(self, port: int, token: str | None = None, *, host: str = HOST, timeout: float = 30.0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("ApiClient talks to loopback only")
        self.host, self.port, self.token, self.timeout = host, port, token, timeout
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _conn(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, conn.sock is not None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        with self._lock:
            self._all.append(conn)
        self._local.conn = conn
        return conn, False

    def request(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                token: str | None = None) -> Response:
        hdrs = {"Accept": "application/json"}
        tok = token or self.token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        retry_safe = method == "GET" or "Idempotency-Key" in hdrs
        for attempt in range(2):
            conn, reused = self._conn()
            start = time.perf_counter()
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                payload = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if attempt == 0 and reused and retry_safe:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            elapsed = time.perf_counter() - start
            if resp.will_close:
                conn.close()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, payload, elapsed)
        raise AssertionError("unreachable")  # pragma: no cover

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw) -> Response:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- the server --------------------------------------------------------------------------------------------


class ServerError(RuntimeError):
    pass


# Runs in a child interpreter: each command through the real click group, stdin per command, results to a file.
_BATCH_SCRIPT = """
import json, sys
from click.testing import CliRunner
from trialmgr.cli import main
spec = json.load(sys.stdin)
results = []
for args, stdin in spec["commands"]:
    r = CliRunner().invoke(main, args, input=stdin, catch_exceptions=True)
    err = r.stderr + ("" if r.exception is None or isinstance(r.exception, SystemExit) else repr(r.exception))
    results.append({"code": r.exit_code, "stdout": r.stdout, "stderr": err})
    if r.exit_code:
        break
with open(spec["out"], "w") as fh:
    json.dump(results, fh)
"""


@dataclass
class LiveServer:
    """Start with start() or `with`; stop() always runs on exit and is safe to call twice.

    database_url given: serve that database (never dropped here) instead of creating one.
    """

    workers: int = 4
    threads: int = 1
    admin_url: str | None = field(default_factory=lambda: os.environ.get(PG_ENV) or None)
    protocol: Path = DEFAULT_PROTOCOL
    sites: Sequence[str] = SITES
    app: str = "trialmgr.wsgi:app"
    ready_path: str = "/api/v1/openapi.json"
    setup_instance: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 60.0
    stop_timeout: float = 15.0
    cli_timeout: float = 120.0
    port: int = 0
    tmp: Path | None = None
    database_url: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    _proc: subprocess.Popen | None = None
    _log: Any = None
    _owns_tmp: bool = False
    _owns_db: bool = False

    # -- lifecycle

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LiveServer:
        try:
            self._prepare()
            if self.setup_instance:
                self._setup_instance()
            self._start_gunicorn()
        except BaseException:
            self.stop()
            raise
        return self

    def _prepare(self) -> None:
        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="trialmgr-live-"))
            self._owns_tmp = True
        self.instance_path.mkdir(parents=True, exist_ok=True)
        if self.database_url:
            pass  # the caller's database (for example a second app on the same throwaway database)
        elif self.admin_url:
            self.database_url = create_pg_database(self.admin_url)
            self._owns_db = True
        else:
            self.database_url = f"sqlite:///{self.tmp / 'live.db'}"

    @property
    def instance_path(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "instance"

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "gunicorn.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALMGR_")}
        env.update(TRIALMGR_INSTANCE=str(self.instance_path), TRIALMGR_DATABASE_URL=self.database_url,
                   PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
        env.update(self.extra_env)
        return env

    def _start_gunicorn(self) -> None:
        gunicorn = Path(sys.executable).with_name("gunicorn")
        if not gunicorn.exists():
            gunicorn = Path(shutil.which("gunicorn") or "gunicorn")
        for _attempt in range(3):  # another process may grab the free port between our probe and the bind
            self.port = free_port()
            self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
            self._proc = subprocess.Popen(
                [str(gunicorn), "-c", str(GUNICORN_CONF), "--workers", str(self.workers), "--threads",
                 str(self.threads), "--bind", f"{HOST}:{self.port}", self.app],
                cwd=REPO, env=self.env(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True)
            if self._wait_ready():
                return
            self._stop_gunicorn()
            if b"in use" not in self.log_path.read_bytes()[-4000:]:
                break
        raise ServerError(f"gunicorn did not come up on {HOST}:{self.port}:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                try:
                    conn.request("GET", self.ready_path)
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            except OSError:
                pass
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)
        return False

    def _stop_gunicorn(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # graceful: workers finish their request and exit
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                # The master still runs, so its group id is still ours: master and workers together.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # (Workers whose master died on its own notice the new parent pid and exit by themselves.)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        try:
            self._stop_gunicorn()
        finally:
            try:
                if self._owns_db and self.admin_url:
                    self._owns_db = False
                    drop_pg_database(self.admin_url, self.database_url)
            finally:
                if self._owns_tmp and self.tmp is not None:
                    self._owns_tmp = False
                    shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- the CLI

    def cli(self, *args: str, input: str | None = None, check: bool = False,
            timeout: float | None = None) -> subprocess.CompletedProcess:
        """`python -m trialmgr.cli ARGS` against this instance; output captured as text."""
        proc = subprocess.run([sys.executable, "-m", "trialmgr.cli", *args], cwd=REPO, env=self.env(),
                              input=input, capture_output=True, text=True, timeout=timeout or self.cli_timeout)
        if check and proc.returncode != 0:
            raise ServerError(f"trialmgr {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def cli_batch(self, commands: Sequence[tuple[Sequence[str], str | None]]) -> list[dict]:
        """Run several `trialmgr` commands in ONE interpreter (the import is most of a command's cost).

        Each command goes through the real click group (`trialmgr.cli.main`) with its own app, as
        `python -m trialmgr.cli` would; returns [{"code", "stdout", "stderr"}] and stops at the first failure.
        """
        assert self.tmp is not None
        out = self.tmp / f"cli-batch-{secrets.token_hex(4)}.json"
        spec = json.dumps({"out": str(out), "commands": [[list(a), i] for a, i in commands]})
        proc = subprocess.run([sys.executable, "-c", _BATCH_SCRIPT], cwd=REPO, env=self.env(), input=spec,
                              capture_output=True, text=True, timeout=self.cli_timeout)
        results = json.loads(out.read_text()) if out.exists() else []
        if proc.returncode != 0 or len(results) != len(commands) or any(r["code"] for r in results):
            detail = "\n".join(f"$ trialmgr {' '.join(a)} -> {r['code']}\n{r['stdout']}{r['stderr']}"
                               for (a, _), r in zip(commands, results, strict=False))
            raise ServerError(f"CLI setup failed:\n{detail}\n{proc.stdout}\n{proc.stderr}")
        return results

    def _setup_instance(self) -> None:
        password = secrets.token_urlsafe(18) + "\n"
        users = [("investigator", "Irene Investigator", f"{TRIAL}:investigator", "investigator")]
        users += [(f"coord_{s.lower()}", f"Coordinator {s}", f"{TRIAL}:coordinator@{s}", "coordinator")
                  for s in self.sites]
        commands: list[tuple[Sequence[str], str | None]] = [(["init"], None),
                                                            (["protocol", "load", str(self.protocol)], None)]
        commands += [(["user", "add", u, "--name", name, "--role", role, "--password-stdin"], password)
                     for u, name, role, _ in users]
        first_token = len(commands)
        commands += [(["token", "create", "--user", u, "--trial", TRIAL, "--role", r, "--name", "live-server"], None)
                     for u, _, _, r in users]
        commands += [(["randomization", "generate", "--trial", TRIAL], None)]
        results = self.cli_batch(commands)
        for (u, *_), r in zip(users, results[first_token:], strict=False):
            self.tokens[u] = r["stdout"].splitlines()[0].strip()
        # Coordinators by site too: tokens["DE"] is the coordinator at DE.
        for s in self.sites:
            self.tokens[s] = self.tokens[f"coord_{s.lower()}"]

    # -- helpers for tests

    def client(self, token: str | None = None, *, timeout: float = 30.0) -> ApiClient:
        return ApiClient(self.port, token, timeout=timeout)

    @contextlib.contextmanager
    def engine(self) -> Iterator[Any]:
        """A SQLAlchemy engine on the live database, disposed on exit."""
        from sqlalchemy import create_engine

        eng = create_engine(self.database_url)
        try:
            yield eng
        finally:
            eng.dispose()
