#!/usr/bin/env python3
"""Call an Open Music procedure as the signed-in user: a service-auth token minted by the user's own
PDS, or the PDS proxying the call.

    python service_auth.py --pds https://pds.example --handle alice.example --password "$APP_PASSWORD" \
        --appview https://openmusic.example [--service-did did:web:openmusic.example] [--proxy]

Our per-user methods (notifications, analytics, payments) take a service-auth JWT (atproto spec
"XRPC", Inter-Service Authentication): signed by the user's PDS with their repo signing key, ``iss``
the user's DID, ``aud`` our service DID, ``lxm`` the method's NSID, valid about a minute, used once.
A player never sees the user's keys; it asks the PDS for a token per call.

Steps (docs/developers.md, "Calling our procedures"):
1. ``com.atproto.server.createSession`` on the user's PDS.
2. Our service DID: ``--service-did``, else the ``id`` of the AppView's ``/.well-known/did.json``,
   else ``did:web:`` of its host (``%3A`` before a port).
3. ``com.atproto.server.getServiceAuth?aud=<service DID>&lxm=fm.openmusic.notification.getUnreadCount``
   on the PDS; then ``GET /xrpc/fm.openmusic.notification.getUnreadCount`` on the AppView with
   ``Authorization: Bearer <token>``.
4. The same for a procedure: a new token with ``lxm=fm.openmusic.notification.updateSeen`` and
   ``POST /xrpc/fm.openmusic.notification.updateSeen {"seenAt": now}``; the count is read again.
5. With ``--proxy``: the PDS does steps 3 and 4 itself. The call goes to the user's PDS with the
   user's own access token and ``atproto-proxy: <service DID>#openmusic_appview``; the PDS resolves
   our DID document, finds the ``#openmusic_appview`` service endpoint, mints the token and forwards
   the call. It needs our DID document to carry that service (an AppView with payments on publishes
   it).

Prints one JSON object: the service DID, the unread count before and after ``updateSeen``, and
(with ``--proxy``) the proxied answer. Needs only httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

UNREAD = "fm.openmusic.notification.getUnreadCount"
UPDATE_SEEN = "fm.openmusic.notification.updateSeen"
#: The fragment of our service in our DID document.
SERVICE_ID = "openmusic_appview"


def now_iso() -> str:
    """The current time in the atproto datetime format (UTC, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check(resp: httpx.Response) -> dict:
    """The JSON body of a 2xx answer; otherwise exit with the XRPC error."""
    if resp.status_code >= 300:
        sys.exit(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:300]}")
    return resp.json() if resp.content else {}


def service_did(appview: httpx.Client, given: str | None) -> str:
    """Our service DID: ``given``, the AppView's did:web document's ``id``, or did:web of its host."""
    if given:
        return given
    doc = appview.get("/.well-known/did.json")
    if doc.status_code == 200 and isinstance(doc.json().get("id"), str):
        return doc.json()["id"]
    return "did:web:" + urlsplit(str(appview.base_url)).netloc.replace(":", "%3A")


def token(pds: httpx.Client, aud: str, lxm: str) -> str:
    """A service-auth JWT from the user's PDS for calling ``lxm`` on ``aud``."""
    return check(pds.get("/xrpc/com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm}))["token"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pds", required=True, help="the user's PDS URL")
    p.add_argument("--handle", required=True, help="the user's handle or DID")
    p.add_argument("--password", default=os.environ.get("APP_PASSWORD"), help="app password (or APP_PASSWORD)")
    p.add_argument("--appview", required=True, help="the Open Music AppView URL")
    p.add_argument("--service-did", help="our service DID (default: from the AppView)")
    p.add_argument("--proxy", action="store_true", help="also call through the PDS with atproto-proxy")
    args = p.parse_args()
    if not args.password:
        p.error("give --password or set APP_PASSWORD")

    with httpx.Client(base_url=args.pds, timeout=30) as pds, httpx.Client(base_url=args.appview, timeout=30) as api:
        session = check(pds.post("/xrpc/com.atproto.server.createSession",
                                 json={"identifier": args.handle, "password": args.password}))
        pds.headers["authorization"] = f"Bearer {session['accessJwt']}"
        aud = service_did(api, args.service_did)

        # A query: a token for exactly this method, sent as a bearer token.
        before = check(api.get(f"/xrpc/{UNREAD}", headers={"authorization": f"Bearer {token(pds, aud, UNREAD)}"}))
        # A procedure: a new token (each is for one method and is accepted once).
        check(api.post(f"/xrpc/{UPDATE_SEEN}", json={"seenAt": now_iso()},
                       headers={"authorization": f"Bearer {token(pds, aud, UPDATE_SEEN)}"}))
        after = check(api.get(f"/xrpc/{UNREAD}", headers={"authorization": f"Bearer {token(pds, aud, UNREAD)}"}))
        out = {"did": session["did"], "serviceDid": aud, "before": before, "after": after}

        if args.proxy:
            # The user's PDS mints the token and forwards the call to our #openmusic_appview endpoint.
            out["proxied"] = check(pds.get(f"/xrpc/{UNREAD}", headers={"atproto-proxy": f"{aud}#{SERVICE_ID}"}))
        print(json.dumps(out))
        return 0


if __name__ == "__main__":
    sys.exit(main())
