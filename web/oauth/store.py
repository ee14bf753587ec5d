"""Server-side OAuth state in the AppView's SQLite database (tables from migration 0009).

Pending authorizations (``PendingAuth``) are single use: ``take_pending`` consumes one atomically
and tells an unknown ``state`` from one already used or expired, so a replayed callback gets a
clear answer. Sessions (``SessionData``) are found by the SHA-256 of the session cookie; the cookie
value itself is never stored. Everything secret (tokens, DPoP private keys, PKCE verifiers) is
sealed with ``web.sealing.Sealer``, bound to its row."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass

import aiosqlite

from web.sealing import Sealer, SealError

log = logging.getLogger("openmusic.web.oauth")


def digest(value: str) -> str:
    """Hex SHA-256 of ``value`` (how cookies and states are keyed)."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass
class PendingAuth:
    """An authorization in flight: what the callback needs to finish it."""

    state: str
    issuer: str
    client_id: str
    scope: str
    pkce_verifier: str
    dpop_key: dict
    dpop_nonce: str | None
    #: The DID the user named (handle or DID input); None when they named a PDS.
    did: str | None
    handle: str | None
    pds_url: str | None
    #: SHA-256 of the browser-binding cookie set when the sign-in started.
    binding: str
    next_url: str = "/me"


@dataclass
class SessionData:
    """One signed-in browser's OAuth session."""

    did: str
    handle: str | None
    pds_url: str
    issuer: str
    client_id: str
    scope: str
    access_token: str
    refresh_token: str | None
    #: Unix seconds the access token expires (None: unknown).
    token_expires_at: int | None
    dpop_key: dict
    as_nonce: str | None = None
    pds_nonce: str | None = None
    created_at: int = 0
    expires_at: int = 0


class PendingError(Exception):
    """A callback's ``state`` cannot be used. ``reason``: ``unknown``, ``used`` or ``expired``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_SECRET_FIELDS = ("access_token", "refresh_token", "dpop_key", "as_nonce", "pds_nonce", "issuer", "client_id",
                  "scope", "pds_url")


class SessionStore:
    """Pending authorizations and sessions on one aiosqlite connection (autocommit)."""

    def __init__(self, conn: aiosqlite.Connection, sealer: Sealer) -> None:
        self.conn = conn
        self.sealer = sealer

    # -- pending authorizations --------------------------------------------------------------------
    async def put_pending(self, pending: PendingAuth, ttl_s: int, now: int | None = None) -> None:
        """Keep ``pending`` for ``ttl_s`` seconds."""
        now = int(time.time()) if now is None else now
        key = digest(pending.state)
        sealed = self.sealer.seal(dataclasses.asdict(pending), f"web_oauth_request:{key}")
        await self.conn.execute("INSERT INTO web_oauth_request (state_hash, created_at, expires_at, sealed) "
                                "VALUES (?, ?, ?, ?)", (key, now, now + ttl_s, sealed))

    async def take_pending(self, state: str, now: int | None = None) -> PendingAuth:
        """Consume the pending authorization of ``state`` (once). Raises ``PendingError``."""
        now = int(time.time()) if now is None else now
        key = digest(state)
        cur = await self.conn.execute("UPDATE web_oauth_request SET used_at = ? WHERE state_hash = ? "
                                      "AND used_at IS NULL AND expires_at > ?", (now, key, now))
        if cur.rowcount != 1:
            row = await (await self.conn.execute("SELECT used_at FROM web_oauth_request WHERE state_hash = ?",
                                                 (key,))).fetchone()
            if row is None:
                raise PendingError("unknown")
            raise PendingError("used" if row["used_at"] is not None else "expired")
        row = await (await self.conn.execute("SELECT sealed FROM web_oauth_request WHERE state_hash = ?",
                                             (key,))).fetchone()
        try:
            data = self.sealer.open(row["sealed"], f"web_oauth_request:{key}")
        except SealError as exc:
            log.warning("pending authorization does not open: %s", exc)
            raise PendingError("unknown") from exc
        return PendingAuth(**data)  # type: ignore[arg-type]

    # -- sessions ----------------------------------------------------------------------------------
    async def create_session(self, data: SessionData, ttl_s: int, now: int | None = None) -> str:
        """Store a new session; returns the cookie value (random, 256 bits)."""
        now = int(time.time()) if now is None else now
        data.created_at, data.expires_at = now, now + ttl_s
        cookie = secrets.token_urlsafe(32)
        key = digest(cookie)
        await self.conn.execute(
            "INSERT INTO web_session (id_hash, did, handle, created_at, expires_at, token_expires_at, updated_at, "
            "sealed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, data.did, data.handle, now, data.expires_at, data.token_expires_at, now, self._seal(key, data)))
        return cookie

    def _seal(self, key: str, data: SessionData) -> bytes:
        return self.sealer.seal({f: getattr(data, f) for f in _SECRET_FIELDS}, f"web_session:{key}")

    async def load(self, key: str, now: int | None = None) -> SessionData | None:
        """The live session whose id hash is ``key``, or None (unknown, expired: deleted, or sealed
        with a key no longer configured)."""
        now = int(time.time()) if now is None else now
        row = await (await self.conn.execute(
            "SELECT did, handle, created_at, expires_at, token_expires_at, sealed FROM web_session WHERE id_hash = ?",
            (key,))).fetchone()
        if row is None:
            return None
        if row["expires_at"] <= now:
            await self.delete(key)
            return None
        try:
            secret = self.sealer.open(row["sealed"], f"web_session:{key}")
        except SealError as exc:
            log.warning("session %s… does not open: %s", key[:8], exc)
            return None
        return SessionData(did=row["did"], handle=row["handle"], token_expires_at=row["token_expires_at"],
                           created_at=row["created_at"], expires_at=row["expires_at"], **secret)  # type: ignore[arg-type]

    async def save(self, key: str, data: SessionData, now: int | None = None) -> bool:
        """Write ``data`` back (new tokens, nonces). False when the session is gone meanwhile."""
        now = int(time.time()) if now is None else now
        cur = await self.conn.execute(
            "UPDATE web_session SET handle = ?, token_expires_at = ?, updated_at = ?, sealed = ? WHERE id_hash = ?",
            (data.handle, data.token_expires_at, now, self._seal(key, data), key))
        return cur.rowcount == 1

    async def delete(self, key: str) -> None:
        """Forget one session."""
        await self.conn.execute("DELETE FROM web_session WHERE id_hash = ?", (key,))

    async def keys_for(self, did: str) -> list[str]:
        """Id hashes of every session of ``did``."""
        rows = await (await self.conn.execute("SELECT id_hash FROM web_session WHERE did = ?", (did,))).fetchall()
        return [r["id_hash"] for r in rows]

    async def purge(self, now: int | None = None, keep_used_s: int = 3600) -> None:
        """Delete expired sessions, and pending authorizations an hour past their expiry (kept that
        long so a replayed ``state`` is still recognised)."""
        now = int(time.time()) if now is None else now
        await self.conn.execute("DELETE FROM web_session WHERE expires_at <= ?", (now,))
        await self.conn.execute("DELETE FROM web_oauth_request WHERE expires_at <= ?", (now - keep_used_s,))
