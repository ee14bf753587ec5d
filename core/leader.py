"""Leader election: exactly one process at a time does the work that must happen once per database
(the indexer: firehose, resync, label streams and sweeps, the payment broker, periodic jobs).

``Leadership`` is what the runtime (``openmusic run --role indexer|all``) uses:

- ``await acquire()``: try once, without waiting; True when this process holds it now.
- ``await wait()``: until this process holds it (tries again every ``poll_s`` seconds).
- ``await holding()``: whether it is still held. The runtime asks every few seconds while it leads
  and stops writing (it exits) when the answer is no.
- ``await release()``: let it go (the next ``wait`` elsewhere returns within ``poll_s``).

Whoever holds it must not write before ``acquire``/``wait`` returns, and must stop writing when
``holding()`` says no; a standby starts from the durable cursor once it holds it.

Implementations:

- ``FileLeadership`` (SQLite, now): ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<db>.leader`` beside the
  database. The kernel drops the lock when the last descriptor of the open file closes, which
  happens when the process dies however it dies (SIGKILL, OOM killer), so a standby takes over
  within ``poll_s`` of the leader's death. The file's content names the holder (``holder()``: pid,
  host, since), for people. The file is never deleted: a process waiting on an unlinked inode would
  lead beside one that locked a new file. Like SQLite's WAL itself, it needs every process on the
  same machine and a local file system (``flock`` is not reliable over NFS). The descriptor is not
  inherited by spawned or exec'd children (Python opens files non-inheritable), so worker processes
  (commit verification) never keep a dead leader's lock.
- PostgreSQL (later, issue 15): ``pg_try_advisory_lock(key)`` on a dedicated connection opened for
  it alone (advisory locks belong to the session: never a pooled connection), with ``key`` a fixed
  64-bit number (``lock_key(name)``). ``acquire`` = one ``pg_try_advisory_lock``; ``wait`` = that
  every ``poll_s``; ``holding`` = a ``SELECT 1`` on that session succeeds (the server drops the lock
  when the session ends, so a lost connection means a lost lock; set TCP keepalives and
  ``idle_session_timeout`` so a dead leader's session ends within seconds); ``release`` =
  ``pg_advisory_unlock(key)`` and close. A leader cut off from the server may still run until its
  next ``holding()``: the PostgreSQL indexer should check it before each batch commits (or commit its
  batches on the lock's own session, so a lost session cannot commit at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger("openmusic.leader")
#: Seconds between attempts of a standby (``Leadership.wait``): the takeover delay after the
#: leader dies, before the new leader's start-up.
POLL_S = 0.5
#: The name of the indexer's leadership (the PostgreSQL lock key is derived from it).
INDEXER = "openmusic:indexer"


def lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (first 8 bytes of its SHA-256), as
    PostgreSQL's ``pg_try_advisory_lock(bigint)`` takes it."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class Leadership(ABC):
    """One process at a time holds it (see the module docstring). ``name``: what is led (for logs);
    ``poll_s``: seconds between attempts in ``wait``."""

    def __init__(self, name: str = INDEXER, poll_s: float = POLL_S) -> None:
        self.name = name
        self.poll_s = poll_s
        #: ``time.monotonic()`` when this process took it, or None while it does not hold it
        self.since: float | None = None

    @abstractmethod
    async def acquire(self) -> bool:
        """Try once, without waiting. True when this process holds it now (also when it already did)."""

    async def wait(self) -> None:
        """Return once this process holds it, trying every ``poll_s`` seconds; cancellable."""
        logged = False
        while not await self.acquire():
            if not logged:
                log.info("%s is held by another process (%s); standing by", self.name, self.holder() or "unknown")
                logged = True
            await asyncio.sleep(self.poll_s)

    @abstractmethod
    async def holding(self) -> bool:
        """Whether this process still holds it."""

    @abstractmethod
    async def release(self) -> None:
        """Let it go (nothing when not held). Call only once this process writes no more."""

    def holder(self) -> dict[str, Any] | None:
        """What is known of the current holder (``pid``, ``host``, ``since`` epoch seconds), or None."""
        return None


class FileLeadership(Leadership):
    """``Leadership`` through ``flock`` on the file ``path`` (created when missing, never deleted).
    Raises ``OSError`` when the file cannot be opened."""

    def __init__(self, path: str, name: str = INDEXER, poll_s: float = POLL_S) -> None:
        super().__init__(name, poll_s)
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        """``flock(LOCK_EX | LOCK_NB)``; on success write our pid, host and the time into the file."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.since = time.monotonic()
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)})
        with contextlib.suppress(OSError):  # the note is for people; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode() + b"\n", 0)
        log.info("%s: this process (pid %d) leads now (%s)", self.name, os.getpid(), self.path)
        return True

    async def holding(self) -> bool:
        """True while our descriptor is open (the kernel keeps the lock as long as it is)."""
        return self._fd is not None

    async def release(self) -> None:
        """Unlock and close; the file stays (see the module docstring)."""
        fd, self._fd, self.since = self._fd, None, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        log.info("%s: released by pid %d", self.name, os.getpid())

    def holder(self) -> dict[str, Any] | None:
        """The note the holder wrote into the file (``pid``, ``host``, ``since``), or None when there is
        none (nobody leads, or the last leader was killed: a dead leader's note stays until the next
        leader overwrites it, so check ``pid`` on ``host`` before trusting it)."""
        try:
            with open(self.path) as f:
                text = f.read().strip()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return None


def leadership_for(settings: Settings, name: str = INDEXER) -> Leadership:
    """The ``Leadership`` of ``settings``' database: today always SQLite's, ``FileLeadership`` on
    ``<db_path>.leader`` (a PostgreSQL database will get its advisory lock here)."""
    return FileLeadership(f"{settings.db_path}.leader", name)
