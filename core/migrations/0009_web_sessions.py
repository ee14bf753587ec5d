"""Web sign-in (issue 11): the OAuth client's server-side state for the web app (``web/``).

``web_oauth_request``: one row per pending authorization (a PAR sent, the browser on its way to
the PDS). Keyed by the SHA-256 of the OAuth ``state``; ``sealed`` is AES-GCM ciphertext of the PKCE
verifier, the DPoP private key, the issuer and the expected DID. A row is consumed once
(``used_at``) and kept until ``expires_at`` so that a replayed ``state`` is recognised as such.

``web_session``: one row per signed-in browser. Keyed by the SHA-256 of the session cookie (the
cookie itself is never stored); ``sealed`` is AES-GCM ciphertext of the access and refresh tokens,
the DPoP private key and nonces. ``did`` and the times are clear so sessions can be listed,
expired and revoked per account without the key. Times are Unix seconds."""

from yoyo import step

__depends__ = {"0006_streams_and_subscriptions"}

steps = [
    step("""CREATE TABLE web_oauth_request (
        state_hash TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        sealed BLOB NOT NULL
    )""", "DROP TABLE web_oauth_request"),
    step("CREATE INDEX web_oauth_request_expiry ON web_oauth_request(expires_at)"),
    step("""CREATE TABLE web_session (
        id_hash TEXT PRIMARY KEY,
        did TEXT NOT NULL,
        handle TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        token_expires_at INTEGER,
        updated_at INTEGER NOT NULL,
        sealed BLOB NOT NULL
    )""", "DROP TABLE web_session"),
    step("CREATE INDEX web_session_did ON web_session(did)"),
    step("CREATE INDEX web_session_expiry ON web_session(expires_at)"),
]
