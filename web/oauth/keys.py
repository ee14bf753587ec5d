"""Print new secrets for the web app's environment:

    python -m web.oauth.keys

``OPENMUSIC_OAUTH_PRIVATE_KEY`` (the confidential client's ES256 private JWK, with a ``kid``) and
``OPENMUSIC_SESSION_KEY`` (32 random bytes, base64url). Keep both out of logs and images."""

from __future__ import annotations

import json
import shlex

from joserfc.jwk import ECKey

from web.sealing import new_key_text


def new_client_key() -> dict:
    """A fresh ES256 private JWK whose ``kid`` is its thumbprint."""
    key = ECKey.generate_key("P-256", private=True)
    jwk = key.as_dict(private=True)
    jwk["kid"] = key.thumbprint()
    return jwk


def main() -> None:
    print("OPENMUSIC_OAUTH_PRIVATE_KEY=" + shlex.quote(json.dumps(new_client_key(), separators=(",", ":"))))
    print("OPENMUSIC_SESSION_KEY=" + new_key_text())


if __name__ == "__main__":
    main()
