"""``openmusic cluster``: the topology of ``docker compose --profile cluster`` as processes on this
machine, started by one command (issue 15).

What starts, in order (each a child process, its output in ``<data dir>/logs/<name>.log``):

1. The database: the PostgreSQL of ``OPENMUSIC_DATABASE_URL`` when given; else a throwaway cluster
   (``devkit.pgserver``: ``initdb`` into a temporary folder, gone when this stops) with a database
   ``openmusic``; with ``--sqlite``, the SQLite file ``<data dir>/openmusic.sqlite`` instead.
2. ``openmusic migrate``, once; the rest starts only when it succeeded.
3. The indexers (``openmusic run --role indexer``; ``indexer-1`` first, which leads; then the
   standbys) and the API replicas (``--role api``), all on loopback: the replicas on ``port + 1`` ...
   ``port + replicas``, the indexers' ``/health`` on the ports after those.
4. The reverse proxy on ``host:port``, round robin over the replicas: nginx with deploy/nginx.conf
   (``render_nginx``: the same file as compose, with these ports and paths) when nginx is on the
   ``PATH``, else ``devkit.proxy`` (Python, the same behaviour).

Every process shares ``<data dir>`` (``OPENMUSIC_DB_PATH`` is ``<data dir>/openmusic.sqlite``):
the development key files (labeler key, web session key) are made once there and read by all, and
the blob cache is shared. Every process gets ``OPENMUSIC_PUBLIC_URL`` = the proxy's URL (default).
The other settings come from the environment (``OPENMUSIC_*``) or the flags, as for ``openmusic run``.

It writes ``<data dir>/cluster.json`` (the topology: URLs, ports, pids; rewritten when a process is
restarted), prints where everything is, and waits. A child that exits on its own is started again
after ``RESTART_DELAY_S`` (a killed leader's standby takes over meanwhile; the restarted one stands by).
On SIGINT or SIGTERM it stops the proxy, then the indexers and replicas (SIGTERM; SIGKILL after
``STOP_TIMEOUT_S``), then the throwaway database, and returns 0. Children also get SIGTERM if this
process dies without stopping them (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

#: deploy/nginx.conf: the proxy's configuration, shared with docker-compose.yml.
NGINX_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
#: The upstream block of the API replicas in ``NGINX_CONF``.
UPSTREAM = "openmusic_api"
#: Seconds before a child that exited on its own is started again.
RESTART_DELAY_S = 1.0
#: A child that keeps dying waits twice as long each time, up to this (s); one that ran for
#: ``STABLE_S`` before it died starts again after ``RESTART_DELAY_S``.
RESTART_MAX_DELAY_S = 30.0
STABLE_S = 60.0
#: Seconds a child has to stop after SIGTERM before it gets SIGKILL.
STOP_TIMEOUT_S = 40.0
#: Seconds each start-up step may take (migrations, a process answering ``/health``).
START_TIMEOUT_S = 120.0
PROXIES = ("auto", "nginx", "python")


class ClusterError(RuntimeError):
    """A step of the start-up failed (the message says which, with the end of its log)."""


@dataclass
class Options:
    """What to start. ``host``/``port``: where the proxy listens (the replicas and indexers take the
    next ``replicas + indexers`` ports on 127.0.0.1); ``proxy``: one of ``PROXIES``;
    ``database_url``: a PostgreSQL URL to use (empty: a throwaway one, or SQLite with ``sqlite``);
    ``settings_env``: ``OPENMUSIC_*`` variables given as flags, passed to every process."""

    host: str = "127.0.0.1"
    port: int = 8080
    replicas: int = 2
    indexers: int = 2
    data_dir: str = "data/cluster"
    proxy: str = "auto"
    database_url: str = ""
    sqlite: bool = False
    settings_env: dict[str, str] = field(default_factory=dict)

    @property
    def public_url(self) -> str:
        """The proxy's URL (what clients use), unless ``OPENMUSIC_PUBLIC_URL`` says otherwise."""
        given = self.settings_env.get("OPENMUSIC_PUBLIC_URL") or os.environ.get("OPENMUSIC_PUBLIC_URL")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return given or f"http://{host}:{self.port}"

    def api_ports(self) -> list[int]:
        return [self.port + 1 + i for i in range(self.replicas)]

    def indexer_ports(self) -> list[int]:
        return [self.port + 1 + self.replicas + i for i in range(self.indexers)]


def nginx_binary() -> str | None:
    """The ``nginx`` on the ``PATH`` (or in /usr/sbin, which a user's ``PATH`` may lack), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def choose_proxy(kind: str) -> str:
    """``nginx`` or ``python`` for ``kind`` (one of ``PROXIES``; ``auto``: nginx when it is installed
    and deploy/nginx.conf is here, a checkout). Raises ``ClusterError`` for ``nginx`` when either lacks."""
    if kind not in PROXIES:
        raise ValueError(f"proxy must be one of {', '.join(PROXIES)}")
    if kind == "python":
        return "python"
    if nginx_binary() is None or not NGINX_CONF.is_file():
        if kind == "nginx":
            raise ClusterError(f"nginx is not installed (apt-get install nginx), or {NGINX_CONF} is missing (it "
                               "comes with a checkout); or use --proxy python")
        return "python"
    return "nginx"


def render_nginx(text: str, backends: list[str], listen: str, temp_dir: str) -> str:
    """deploy/nginx.conf (``text``) for this machine: the ``openmusic_api`` upstream's servers become
    ``backends`` (``host:port``, with the parameters of the file's first server line), ``listen`` the
    server's (``host:port``), and the temporary files go under ``temp_dir`` (nginx's built-in paths
    need root). Raises ``ValueError`` when the file no longer has that shape."""
    block = re.search(r"(upstream\s+" + UPSTREAM + r"\s*\{\n)(.*?)(\n\s*\})", text, re.S)
    if block is None:
        raise ValueError(f"no 'upstream {UPSTREAM} {{ ... }}' block")
    lines = block.group(2).split("\n")
    servers = [(i, m) for i, line in enumerate(lines) if (m := re.match(r"^(\s*)server\s+\S+(.*);\s*$", line))]
    if not servers:
        raise ValueError(f"no server in the upstream {UPSTREAM}")
    first, m = servers[0]
    indent, params = m.group(1), m.group(2)
    kept = [line for i, line in enumerate(lines) if i not in {j for j, _ in servers}]
    new = [f"{indent}server {b}{params};" for b in backends]
    body = "\n".join(kept[:first] + new + kept[first:])
    text = text[:block.start(2)] + body + text[block.end(2):]
    text, n = re.subn(r"^(\s*)listen\s+\S+;", lambda mm: f"{mm.group(1)}listen {listen};", text, count=1, flags=re.M)
    if n != 1:
        raise ValueError("no 'listen' line")
    temps = "".join(f"    {kind}_temp_path {temp_dir}/{kind};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text, n = re.subn(r"^http\s*\{\n", lambda mm: mm.group(0) + temps, text, count=1, flags=re.M)
    if n != 1:
        raise ValueError("no 'http {' block")
    return text


try:
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: a forked child should not load anything
except (OSError, AttributeError):  # not Linux
    _PRCTL = None
#: ``prctl`` option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """In a child before exec: get SIGTERM when the parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One child process: ``name`` (``api-1``, ``indexer-2``, ``proxy``), its command and
    environment, its log file, ``url`` (where it answers ``/health``) and ``proc`` once started."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log: Path
    url: str = ""
    port: int = 0
    role: str = ""
    proc: subprocess.Popen | None = None
    restarts: int = 0
    #: ``time.monotonic()`` at the last start; deaths in a row without a stable run
    started_at: float = 0.0
    failures: int = 0
    _log_file: IO[bytes] | None = None

    def start(self) -> None:
        """Start (or start again) the process in a session of its own, its output appended to ``log``."""
        if self._log_file is None:
            self._log_file = open(self.log, "ab")  # noqa: SIM115 - kept open while the child runs
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (its session: the child and what it started,
        such as the commit verifiers' worker processes)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def health(self) -> dict[str, Any] | None:
        """The JSON body of ``GET /health`` (any status), or None while nothing answers."""
        try:
            return httpx.get(f"{self.url}/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def stop_children(children: list[Child], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every running child of ``children``, wait for all up to ``timeout_s`` seconds, then
    SIGKILL those left (and wait for them)."""
    for c in children:
        if c.running():
            with contextlib.suppress(ProcessLookupError):
                c.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for c in children:
        if c.proc is None:
            continue
        try:
            c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.signal_group(signal.SIGKILL)
            c.proc.wait(timeout=10)
        c.signal_group(signal.SIGKILL)  # what it started and left behind (its session)
        c.close()


def restart_delay(failures: int) -> float:
    """Seconds before a child that died is started again, after ``failures`` deaths in a row without
    a stable run: ``RESTART_DELAY_S``, doubling with each, at most ``RESTART_MAX_DELAY_S``."""
    return min(RESTART_MAX_DELAY_S, RESTART_DELAY_S * 2 ** max(0, failures - 1))


class Cluster:
    """The processes of ``Options`` (see the module docstring). ``out``: where lines for people go."""

    def __init__(self, options: Options, out: Callable[[str], None] = print) -> None:
        self.o = options
        self.out = out
        self.data = Path(options.data_dir).resolve()
        self.logs = self.data / "logs"
        self.stopping = threading.Event()
        self.database = ""
        self.throwaway = False
        self.proxy_kind = ""
        self.indexers: list[Child] = []
        self.apis: list[Child] = []
        self.proxy: Child | None = None

    # -- start-up ---------------------------------------------------------------------------------

    def env(self, port: int | None = None) -> dict[str, str]:
        """The environment of an openmusic child: ours, the flags' settings, the shared data folder,
        the database, loopback, ``port`` and the public URL."""
        env = {k: v for k, v in os.environ.items() if k not in ("OPENMUSIC_ROLE", "OPENMUSIC_HOST", "OPENMUSIC_PORT")}
        env.update(self.o.settings_env)
        env.update(OPENMUSIC_DB_PATH=str(self.data / "openmusic.sqlite"),
                   OPENMUSIC_BLOB_CACHE_DIR=str(self.data / "blobs"),
                   OPENMUSIC_PUBLIC_URL=self.o.public_url, OPENMUSIC_HOST="127.0.0.1", PYTHONUNBUFFERED="1")
        if self.database.startswith("postgresql"):
            env["OPENMUSIC_DATABASE_URL"] = self.database
        else:
            env.pop("OPENMUSIC_DATABASE_URL", None)
        if port is not None:
            env["OPENMUSIC_PORT"] = str(port)
        return env

    def _openmusic(self, name: str, role: str, port: int) -> Child:
        cmd = [sys.executable, "-m", "openmusic.cli", "run", "--role", role]
        return Child(name, cmd, self.env(port), self.logs / f"{name}.log", url=f"http://127.0.0.1:{port}",
                     port=port, role=role)

    def _wait(self, what: str, check: Callable[[], object], watch: list[Child]) -> object:
        """Poll ``check()`` until truthy (returned). Raises ``ClusterError`` when one of ``watch``
        exits (with its log), after ``START_TIMEOUT_S``, or ``KeyboardInterrupt`` when asked to stop."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.stopping.is_set():
                raise KeyboardInterrupt
            value = check()
            if value:
                return value
            dead = [c for c in watch if not c.running()]
            if dead or time.monotonic() > deadline:
                c = dead[0] if dead else watch[0]
                why = f"{c.name} exited with {c.proc.returncode}" if dead else f"not within {START_TIMEOUT_S:.0f} s"
                raise ClusterError(f"{what}: {why}. The end of {c.log}:\n{c.tail()}")
            time.sleep(0.1)

    def migrate(self) -> None:
        """``openmusic migrate`` once; raises ``ClusterError`` when it fails."""
        child = Child("migrate", [sys.executable, "-m", "openmusic.cli", "migrate"], self.env(),
                      self.logs / "migrate.log")
        child.start()
        try:
            self._wait("openmusic migrate", lambda: child.proc.poll() == 0, [child])
        finally:
            if child.running():
                stop_children([child])
            child.close()

    def start_processes(self) -> None:
        """The indexers and replicas (``indexer-1`` leads before the standbys start), then the proxy;
        returns once each answers ``/health``. Raises ``ClusterError``."""
        self.indexers = [self._openmusic(f"indexer-{i + 1}", "indexer", p) for i, p in enumerate(self.o.indexer_ports())]
        self.apis = [self._openmusic(f"api-{i + 1}", "api", p) for i, p in enumerate(self.o.api_ports())]
        first, *standbys = self.indexers
        for c in (first, *self.apis):
            c.start()
        self._wait(f"{first.name} leads", lambda: (first.health() or {}).get("status") not in (None, "standby"),
                   [first, *self.apis])
        for c in standbys:
            c.start()
        for c in (*standbys, *self.apis):
            self._wait(f"{c.name} answers /health", c.health, [c])
        self.proxy = self._proxy_child()
        self.proxy.start()
        self._wait("the proxy answers /health", self.proxy.health, [self.proxy])

    def _proxy_child(self) -> Child:
        backends = [f"127.0.0.1:{p}" for p in self.o.api_ports()]
        listen = f"{self.o.host}:{self.o.port}"
        local = "127.0.0.1" if self.o.host in ("0.0.0.0", "::", "") else self.o.host
        url = f"http://{local}:{self.o.port}"
        if self.proxy_kind == "nginx":
            prefix = self.data / "nginx"
            (prefix / "temp").mkdir(parents=True, exist_ok=True)
            conf = prefix / "nginx.conf"
            conf.write_text(render_nginx(NGINX_CONF.read_text(), backends, listen, str(prefix / "temp")))
            binary = nginx_binary()
            assert binary is not None
            cmd = [binary, "-e", "stderr", "-p", str(prefix), "-c", str(conf),
                   "-g", f"pid {prefix / 'nginx.pid'}; daemon off;"]
        else:
            cmd = [sys.executable, "-m", "devkit.proxy", "--listen", listen,
                   *[a for b in backends for a in ("--backend", b)]]
        return Child("proxy", cmd, self.env(), self.logs / "proxy.log", url=url, port=self.o.port)

    # -- what is where ----------------------------------------------------------------------------

    def topology(self) -> dict[str, Any]:
        """What runs where (``cluster.json``): the proxy, the replicas, the indexers (url, port, pid),
        the database (no password) and the data folder."""
        from core.db import shown_target

        def one(c: Child) -> dict[str, Any]:
            return {"name": c.name, "url": c.url, "port": c.port, "pid": c.pid, "log": str(c.log)}

        return {"proxy": {**one(self.proxy), "kind": self.proxy_kind} if self.proxy else None,
                "publicUrl": self.o.public_url, "api": [one(c) for c in self.apis],
                "indexers": [one(c) for c in self.indexers],
                "database": shown_target(self.database), "throwaway": self.throwaway, "dataDir": str(self.data),
                "cluster": {"pid": os.getpid()}}

    def write_topology(self) -> None:
        path = self.data / "cluster.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.topology(), indent=2) + "\n")
        os.replace(tmp, path)

    def banner(self) -> str:
        from core.db import shown_target

        proxy = self.proxy
        assert proxy is not None
        db = shown_target(self.database) + (" (throwaway: gone when this stops)" if self.throwaway else "")
        lines = [f"Open Music cluster: {len(self.indexers)} indexers, {len(self.apis)} API replicas behind "
                 f"{'nginx' if self.proxy_kind == 'nginx' else 'devkit.proxy'}",
                 f"  {proxy.url}/  the AppView and web app (round robin over the replicas; public URL "
                 f"{self.o.public_url})"]
        for c in self.apis:
            lines.append(f"  {c.url}/  {c.name} (--role api, pid {c.pid})")
        for c in self.indexers:
            state = (c.health() or {}).get("status")
            lines.append(f"  {c.url}/health  {c.name} (--role indexer, {'standby' if state == 'standby' else 'leader'}"
                         f", pid {c.pid})")
        lines += [f"  database  {db}", f"  logs      {self.logs}/", f"  topology  {self.data / 'cluster.json'}",
                  "Press Ctrl-C to stop."]
        return "\n".join(lines)

    # -- running ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _database(self) -> Iterator[None]:
        if self.o.sqlite:
            self.database = str(self.data / "openmusic.sqlite")
            yield
            return
        if self.o.database_url:
            self.database = self.o.database_url
            yield
            return
        from devkit import pgserver

        self.out("starting a throwaway PostgreSQL (initdb + pg_ctl) ...")
        with pgserver.throwaway_cluster() as url:
            self.database = pgserver.create_database(url, "openmusic")
            self.throwaway = True
            yield

    def run(self) -> int:
        """Start everything, wait until asked to stop (``stopping``), stop everything. Returns 0, or 1
        when the start-up failed (the reason printed)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.proxy_kind = choose_proxy(self.o.proxy)
        except ClusterError as exc:
            self.out(f"error: {exc}")
            return 1
        status = 0
        try:
            with self._database():
                try:
                    if self.stopping.is_set():
                        raise KeyboardInterrupt
                    self.migrate()
                    self.start_processes()
                    self.write_topology()
                    self.out(self.banner())
                    self.supervise()
                except ClusterError as exc:
                    self.out(f"error: {exc}")
                    status = 1
                except KeyboardInterrupt:
                    pass
                finally:
                    self.out("stopping ...")
                    stop_children([self.proxy] if self.proxy else [])
                    stop_children([*self.apis, *self.indexers])
        except Exception as exc:  # the database could not be started or stopped
            self.out(f"error: {type(exc).__name__}: {exc}")
            status = 1
        self.out("stopped")
        return status

    def supervise(self) -> None:
        """Until ``stopping`` is set: start again (after ``RESTART_DELAY_S``) any child that exited."""
        died: dict[str, float] = {}
        while not self.stopping.wait(0.2):
            for c in [*self.indexers, *self.apis, *([self.proxy] if self.proxy else [])]:
                if c.running():
                    continue
                if c.name not in died:
                    now = time.monotonic()
                    c.failures = 0 if now - c.started_at >= STABLE_S else c.failures + 1
                    died[c.name] = now
                    self.out(f"{c.name} (pid {c.pid}) exited with {c.proc.returncode}; starting it again in "
                             f"{restart_delay(c.failures):.0f} s")
                elif time.monotonic() - died[c.name] >= restart_delay(c.failures):
                    del died[c.name]
                    c.restarts += 1
                    c.start()
                    self.write_topology()


def run(options: Options, out: Callable[[str], None] = print) -> int:
    """Run ``Cluster(options)`` in this (main) thread until SIGINT or SIGTERM; returns its status."""
    cluster = Cluster(options, out)
    previous = {sig: signal.signal(sig, lambda *_: cluster.stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return cluster.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
