"""Encryption at rest for the web app's secrets (OAuth tokens, DPoP private keys, PKCE verifiers).

``Sealer`` is AES-256-GCM (``cryptography``) with a random 96-bit nonce per message and the row's
identity as associated data, so a sealed value copied into another row does not open. Keys come
from ``WebSettings.session_key`` (several for rotation: the first seals, every one is tried to
open); ``load_keys`` generates one into the data directory only in dev mode.

Sealed format: ``b"\\x01" + key id (4 bytes) + nonce (12 bytes) + ciphertext||tag``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.keyfile import read_or_create

_VERSION = b"\x01"
#: File name of the dev-mode key, beside the database.
DEV_KEY_FILE = "web-session.key"


class SealError(Exception):
    """A sealed value does not open: wrong key, other row, or tampered with."""


class KeyConfigError(RuntimeError):
    """No usable session key (``OPENMUSIC_SESSION_KEY``)."""


def parse_key(text: str) -> bytes:
    """A 32-byte key from base64url (with or without padding) or hex. Raises ``KeyConfigError``."""
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise KeyConfigError("OPENMUSIC_SESSION_KEY must be 32 bytes, base64url or hex "
                             "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return raw


def new_key_text() -> str:
    """A fresh key as base64url text."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def load_keys(configured: str, dev_mode: bool, data_dir: Path) -> list[bytes]:
    """The session keys: ``configured`` (comma-separated), else in dev mode the key in
    ``data_dir/web-session.key`` (created, mode 0600, when missing). Raises ``KeyConfigError``
    outside dev mode when none is configured."""
    parts = [p for p in (configured or "").split(",") if p.strip()]
    if parts:
        return [parse_key(p) for p in parts]
    if not dev_mode:
        raise KeyConfigError("OPENMUSIC_SESSION_KEY is not set: the web app needs it to encrypt sessions "
                             "(only a development network, --allow-private-hosts, generates one)")
    text, _created = read_or_create(data_dir / DEV_KEY_FILE, lambda: new_key_text() + "\n")
    return [parse_key(text)]


def _derive(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"openmusic web {purpose}".encode()).derive(key)


class Sealer:
    """AES-256-GCM over JSON values, bound to a context string (the table and row)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise KeyConfigError("no session key")
        self._keys = [(hashlib.sha256(k).digest()[:4], AESGCM(_derive(k, "seal"))) for k in keys]
        #: HMAC key for CSRF tokens, derived from the current key.
        self.csrf_key = _derive(keys[0], "csrf")

    def seal(self, value: object, context: str) -> bytes:
        """Encrypt ``value`` (JSON-serialisable) for the row named by ``context``."""
        kid, aead = self._keys[0]
        nonce = secrets.token_bytes(12)
        plain = json.dumps(value, separators=(",", ":")).encode()
        return _VERSION + kid + nonce + aead.encrypt(nonce, plain, context.encode())

    def open(self, sealed: bytes, context: str) -> object:
        """Decrypt what ``seal`` made for the same ``context``. Raises ``SealError``."""
        if not isinstance(sealed, bytes | bytearray) or len(sealed) < 1 + 4 + 12 + 16 or sealed[:1] != _VERSION:
            raise SealError("not a sealed value")
        kid, nonce, body = bytes(sealed[1:5]), bytes(sealed[5:17]), bytes(sealed[17:])
        for key_id, aead in self._keys:
            if hmac.compare_digest(key_id, kid):
                try:
                    return json.loads(aead.decrypt(nonce, body, context.encode()))
                except InvalidTag as exc:
                    raise SealError("sealed value does not open (tampered with, or sealed for another row)") from exc
        raise SealError("sealed with a key that is not configured")
