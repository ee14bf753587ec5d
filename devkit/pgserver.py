"""A throwaway PostgreSQL cluster for the tests and the no-Docker topology (issue 15).

``throwaway_cluster()`` runs ``initdb`` into a fresh folder under the system temp dir and starts a
server there on a free loopback port (its unix socket in the same folder), tuned for tests
(``fsync``, ``synchronous_commit`` and ``full_page_writes`` off: a crash loses the cluster, which is
thrown away anyway). The cluster is ``UTF8`` with the ``C`` locale, so text sorts bytewise like
SQLite's ``BINARY`` collation and ``lower()``/``upper()`` fold ASCII only, as SQLite's do
(docs/plans/postgresql.md, "text ordering / collation"). On exit, even after an error, the server is
stopped (fast, then immediate, then ``SIGKILL`` of its postmaster) and the folder removed.

``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user (``runuser``),
who owns the folder. The binaries are the newest ``/usr/lib/postgresql/<major>/bin`` (Debian's
``postgresql`` package), or ``$OPENMUSIC_PG_BIN``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: Where Debian's ``postgresql-<major>`` packages put their binaries.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
#: Seconds ``pg_ctl`` waits for the server to start or stop.
PG_CTL_TIMEOUT_S = 60
#: Settings for a server whose data may be lost: no fsync, no full-page writes, async commit.
TEST_SETTINGS: dict[str, str] = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def bin_dir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: ``$OPENMUSIC_PG_BIN`` when set,
    else the newest major version under ``/usr/lib/postgresql``; ``None`` when there is none."""
    env = os.environ.get("OPENMUSIC_PG_BIN")
    if env:
        return Path(env) if (Path(env) / "initdb").exists() else None
    found = sorted(DEBIAN_ROOT.glob("*/bin/initdb"), key=lambda p: _major(p.parent.parent.name))
    return found[-1].parent if found else None


def _major(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (-1, name)


def run_as_postgres() -> list[str]:
    """The command prefix that runs a server binary as a user it accepts: ``runuser -u postgres --``
    as root (``initdb`` and ``postgres`` refuse root), nothing otherwise."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before we bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    """``initdb`` or ``pg_ctl start`` failed; the message carries their output and the server log."""


@contextlib.contextmanager
def throwaway_cluster(*, max_connections: int = 300, settings: dict[str, str] | None = None,
                      pg_bin: Path | None = None) -> Iterator[str]:
    """Start a fresh cluster and yield its URL, ``postgresql://postgres@127.0.0.1:<port>/postgres``
    (superuser ``postgres``, trust authentication, loopback only).

    ``settings`` adds or overrides server settings (``-c name=value``) on top of ``TEST_SETTINGS``
    and ``max_connections``. Raises ``ClusterError`` when the binaries are missing or the server does
    not start (with ``initdb``/``pg_ctl`` output and the server log). Stops the server and removes its
    folder on exit, also when the body raises.
    """
    bins = pg_bin or bin_dir()
    if bins is None:
        raise ClusterError(f"no PostgreSQL server binaries under {DEBIAN_ROOT}/*/bin "
                           "(apt-get install postgresql, or set OPENMUSIC_PG_BIN)")
    as_pg = run_as_postgres()
    tmp = Path(tempfile.mkdtemp(prefix="om-pg-"))
    data, log = tmp / "data", tmp / "server.log"
    started = False
    try:
        if as_pg:
            shutil.chown(tmp, "postgres")
        _run([*as_pg, str(bins / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
              "-E", "UTF8", "--locale=C", "--no-sync"], "initdb", log)
        conf = {**TEST_SETTINGS, "max_connections": str(max_connections), **(settings or {})}
        for attempt in range(3):  # the free port may be taken between free_port() and the bind
            port = free_port()
            opts = " ".join([f"-p {port}", f"-k {tmp}", "-c listen_addresses=127.0.0.1",
                             *(f"-c {k}={v}" for k, v in conf.items())])
            started = True
            try:
                _run([*as_pg, str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
                      "-t", str(PG_CTL_TIMEOUT_S), "-w", "start"], "pg_ctl start", log)
                break
            except ClusterError:
                _stop(bins, data, as_pg)
                started = False
                if attempt == 2:
                    raise
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if started:
            _stop(bins, data, as_pg)
        shutil.rmtree(tmp, ignore_errors=True)


def _run(cmd: list[str], what: str, log: Path) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PG_CTL_TIMEOUT_S + 30, check=False)
    if proc.returncode != 0:
        server_log = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise ClusterError(f"{what} failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
                           f"\n--- server log ---\n{server_log}")


def _stop(bins: Path, data: Path, as_pg: list[str]) -> None:
    """Stop the server of ``data``: ``pg_ctl stop`` fast, then immediate, then ``SIGKILL`` of the
    postmaster named in ``postmaster.pid`` (its children exit when it dies)."""
    for mode in ("fast", "immediate"):
        if not (data / "postmaster.pid").exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([*as_pg, str(bins / "pg_ctl"), "-D", str(data), "-m", mode, "-t", "30", "-w", "stop"],
                           capture_output=True, timeout=40, check=False)
    pid_file = data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.05)


def with_database(url: str, name: str) -> str:
    """``url`` with its database (the path) replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def create_database(url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` on the server of ``url`` (a superuser URL, e.g. the one
    ``throwaway_cluster`` yields), copied from ``template`` when given (``STRATEGY FILE_COPY`` on
    PostgreSQL 15 and later: fast with fsync off; nobody may be connected to the template). Returns
    the new database's URL. Raises ``psycopg.Error`` (e.g. ``DuplicateDatabase``)."""
    import psycopg
    from psycopg import sql

    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    with psycopg.connect(url, autocommit=True) as conn:
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            if conn.info.server_version >= 150000:
                query += sql.SQL(" STRATEGY FILE_COPY")
        conn.execute(query)
    return with_database(url, name)
