"""A private PostgreSQL for one-command starts, used when no DSN is configured.

:class:`EmbeddedPostgres` runs the PostgreSQL 16 that the ``pgserver`` package bundles, with its data
under ``<data_dir>/postgres``, listening only on a unix socket (no TCP port), and makes sure the
``faces`` database exists. Its :attr:`~EmbeddedPostgres.dsn` is an asyncpg-ready DSN of the form
``postgresql://postgres@/faces?host=<socket dir>&port=5432``.

Lifecycle, as pgserver implements it:

- The first start runs ``initdb`` (seconds); later starts only run ``pg_ctl start`` (a fraction of a
  second). A server that is already running on the same data dir, started by this or by another
  process, is re-attached to instead of started again.
- Every process that attaches is recorded in ``<pgdata>/.handle_pids.json``; the server stops when
  the last attached process calls :meth:`~EmbeddedPostgres.stop` or exits (with
  ``cleanup_mode="stop"``, the default). Processes that died without detaching are dropped from that
  record when another one starts or stops, so they do not keep the server alive forever.
- Run as root, pgserver creates a system user ``pgserver``, runs PostgreSQL as that user, hands it
  the data directory and adds read/traverse permission for group and others (``g+rx,o+rx``) to every
  parent directory of the data dir, so that the server can reach it. Keep the data dir out of
  directories whose listing must stay private.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil

_logger = logging.getLogger(__name__)

DATABASE = "faces"
POSTGRES_USER = "postgres"
CLEANUP_MODES = ("stop", "delete", None)
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _pgserver():
    """Import pgserver lazily (a configured DSN never needs it), without its XDG_RUNTIME_DIR warning.

    Without ``XDG_RUNTIME_DIR`` pgserver keeps its lock file under ``/tmp/runtime-<uid>``, which works.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    return pgserver


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; a zombie (exited, not yet reaped) is not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class EmbeddedPostgres:
    """A PostgreSQL server private to this installation, started (or re-attached to) on construction.

    ``data_dir`` is the installation's data directory; PostgreSQL keeps its files in
    ``data_dir / "postgres"``. ``cleanup_mode`` is pgserver's: ``"stop"`` stops the server when the
    last attached process stops or exits, ``"delete"`` also deletes its files, ``None`` leaves it
    running. Several handles in one process on the same data dir share one server; it stops with
    the last of them.
    """

    _handles: dict[Path, int] = {}
    _guard = threading.Lock()

    def __init__(
        self,
        data_dir: Path | str,
        *,
        cleanup_mode: str | None = "stop",
        database: str = DATABASE,
    ) -> None:
        if cleanup_mode not in CLEANUP_MODES:
            raise ValueError(f"cleanup_mode must be one of {CLEANUP_MODES}, not {cleanup_mode!r}")
        if not _DATABASE_NAME.match(database):
            raise ValueError(f"database name {database!r} must match {_DATABASE_NAME.pattern}")
        data_dir = Path(data_dir).expanduser().resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata = data_dir / "postgres"
        self.database = database
        self._stopped = False

        started = time.perf_counter()
        pgserver = _pgserver()
        with EmbeddedPostgres._guard:
            self._server = pgserver.get_server(self.pgdata, cleanup_mode=cleanup_mode)
            self._attach()
            EmbeddedPostgres._handles[self.pgdata] = EmbeddedPostgres._handles.get(self.pgdata, 0) + 1
        info = self._server.get_postmaster_info()
        self.socket_dir: Path | None = info.socket_dir
        self.host: str | None = info.hostname
        self.port: int = info.port if info.port is not None else 5432
        try:
            self._ensure_database(database)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        _logger.info(
            "embedded PostgreSQL ready in %.2f s (data %s, pid %s)",
            self.startup_seconds,
            self.pgdata,
            info.pid,
        )

    @property
    def dsn(self) -> str:
        """asyncpg DSN of the ``faces`` database (unix socket; trust authentication)."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        """asyncpg DSN of another database on the same server (tests, admin tools)."""
        if self.socket_dir is not None:
            host = quote(str(self.socket_dir), safe="/")
            return f"postgresql://{POSTGRES_USER}@/{database}?host={host}&port={self.port}"
        return f"postgresql://{POSTGRES_USER}@{self.host}:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """Process id of the postmaster this handle is attached to."""
        return self._server.get_pid()

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called on this handle."""
        return self._stopped

    def stop(self) -> None:
        """Detach this handle; the server stops when no handle of any live process remains.

        Idempotent. Other processes attached to the same server keep it running.
        """
        if self._stopped:
            return
        self._stopped = True
        with EmbeddedPostgres._guard:
            remaining = EmbeddedPostgres._handles.get(self.pgdata, 1) - 1
            if remaining > 0:
                EmbeddedPostgres._handles[self.pgdata] = remaining
                return
            EmbeddedPostgres._handles.pop(self.pgdata, None)
            with self._server._lock:
                self._prune_attached()
            self._server.cleanup()
            if self._server.pgdata not in type(self._server)._instances:
                # This process was the last one attached and the server is gone. pgserver leaves its
                # atexit cleanup registered in "stop" mode; at exit it would act on a later handle.
                atexit.unregister(self._server._cleanup)
        _logger.info("embedded PostgreSQL handle on %s stopped", self.pgdata)

    def __enter__(self) -> EmbeddedPostgres:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _attach(self) -> None:
        """Make sure the server runs and this process is recorded as attached to it.

        ``get_server`` returns the handle this process already holds, if any, without checking that
        its server still runs (another process may have stopped it since) or that this process is
        still recorded (a previous :meth:`stop` removed it); both are redone here, under pgserver's
        inter-process lock.
        """
        with self._server._lock:
            self._server.ensure_postgres_running()
            attached = self._prune_attached()
            if os.getpid() not in attached:
                self._server.global_process_id_list.put([*attached, os.getpid()])

    def _prune_attached(self) -> list[int]:
        """Drop dead processes from pgserver's record of attached ones; return the live ones.

        pgserver stops the server only when the process detaching is the last one recorded, and it
        never forgets a process that died without detaching. Call under pgserver's lock.
        """
        record = self._server.global_process_id_list
        pids = record.get()
        alive = [pid for pid in pids if pid == os.getpid() or _process_alive(pid)]
        if alive != pids:
            _logger.info("dropping dead processes %s from %s", sorted(set(pids) - set(alive)), self.pgdata)
            record.put(alive)
        return alive

    def _psql(self, sql: str) -> str:
        """Run one SQL command with the bundled psql against the ``postgres`` database."""
        from pgserver._commands import POSTGRES_BIN_PATH

        host = str(self.socket_dir) if self.socket_dir is not None else str(self.host)
        command = [
            str(POSTGRES_BIN_PATH / "psql"),
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", host, "-p", str(self.port), "-U", POSTGRES_USER, "-d", "postgres",
            "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout.strip()

    def _database_exists(self, database: str) -> bool:
        return self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'") == "1"

    def _ensure_database(self, database: str) -> None:
        """Create ``database`` if missing; tolerate another process creating it at the same time."""
        if self._database_exists(database):
            return
        try:
            self._psql(f"CREATE DATABASE {database}")
            _logger.info("created database %s", database)
        except RuntimeError:
            if not self._database_exists(database):
                raise


def resolve_dsn(configured_dsn: str | None, data_dir: Path) -> tuple[str, EmbeddedPostgres | None]:
    """The PostgreSQL DSN to use, and the embedded server started for it if any.

    A configured DSN wins and starts nothing. Without one, an :class:`EmbeddedPostgres` is started
    (or re-attached to) under ``data_dir``; the caller owns it and calls ``stop()`` at shutdown.
    """
    if configured_dsn and configured_dsn.strip():
        return configured_dsn.strip(), None
    server = EmbeddedPostgres(data_dir)
    return server.dsn, server
