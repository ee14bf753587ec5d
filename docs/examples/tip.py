#!/usr/bin/env python3
"""Tip an artist for a track from the listener's own PDS, and follow the tip on the AppView.

    python tip.py --pds https://pds.example --handle alice.example --password "$APP_PASSWORD" \
        --appview https://openmusic.example [--track AT-URI] [--amount 100] [--currency USD]

Steps (docs/developers.md, "Tips"):
1. ``com.atproto.server.createSession`` on the listener's PDS.
2. ``fm.openmusic.catalog.getTrack``: the track's strongRef and its artist's DID (the tip's
   ``subject``).
3. ``com.atproto.repo.createRecord`` of an ``fm.openmusic.payment.tip``: ``subject`` (artist DID),
   ``track`` (strongRef), ``amount`` (integer minor units: cents for USD), ``currency`` (ISO 4217,
   upper case), ``message`` (optional), ``createdAt``. The tip is the listener's signed promise; the
   AppView's payment broker settles it from the listener's credit and publishes a signed
   ``fm.openmusic.payment.settlement`` in its own repo (``settled``, or ``rejected`` with a reason,
   e.g. no credit).
4. ``fm.openmusic.payment.getTips?payer=<did>`` until the tip is listed, with its verified
   settlement once there is one.

Prints one JSON object: the tip's ``uri``, ``indexed`` and ``settlement`` (status, or null while
none is published: an AppView without payments never settles). Needs only httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

import httpx

TIP = "fm.openmusic.payment.tip"


def now_iso() -> str:
    """The current time in the atproto datetime format (UTC, milliseconds, ``Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check(resp: httpx.Response) -> dict:
    """The JSON body of a 2xx answer; otherwise exit with the XRPC error."""
    if resp.status_code >= 300:
        sys.exit(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:300]}")
    return resp.json() if resp.content else {}


def fetch(api: httpx.Client, nsid: str, **params) -> dict | None:
    """``GET /xrpc/<nsid>`` while waiting for the AppView: None when it does not know the account yet
    (``ActorNotFound``: our records reach it through the firehose a moment after they are written)."""
    resp = api.get(f"/xrpc/{nsid}", params=params)
    if resp.status_code == 400 and resp.json().get("error") == "ActorNotFound":
        return None
    return check(resp)


def login(pds: httpx.Client, handle: str, password: str) -> str:
    """Create a session on the PDS; its access token goes on every later call. Returns the DID."""
    session = check(pds.post("/xrpc/com.atproto.server.createSession",
                             json={"identifier": handle, "password": password}))
    pds.headers["authorization"] = f"Bearer {session['accessJwt']}"
    return session["did"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pds", required=True, help="the listener's PDS URL")
    p.add_argument("--handle", required=True, help="the listener's handle or DID")
    p.add_argument("--password", default=os.environ.get("APP_PASSWORD"), help="app password (or APP_PASSWORD)")
    p.add_argument("--appview", required=True, help="the Open Music AppView URL")
    p.add_argument("--track", help="the track's AT-URI (default: the newest track)")
    p.add_argument("--amount", type=int, default=100, help="minor units (default 100: $1.00)")
    p.add_argument("--currency", default="USD")
    p.add_argument("--message", default="Thank you for this one!")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for the AppView")
    args = p.parse_args()
    if not args.password:
        p.error("give --password or set APP_PASSWORD")

    with httpx.Client(base_url=args.pds, timeout=30) as pds, httpx.Client(base_url=args.appview, timeout=30) as api:
        did = login(pds, args.handle, args.password)
        uri = args.track
        if not uri:
            newest = check(api.get("/xrpc/fm.openmusic.catalog.searchTracks", params={"sort": "recent", "limit": 1}))
            if not newest["tracks"]:
                sys.exit("the AppView has no track yet: give --track")
            uri = newest["tracks"][0]["uri"]
        track = check(api.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": uri}))["track"]
        record = {"$type": TIP, "subject": track["artist"]["did"], "track": {"uri": track["uri"], "cid": track["cid"]},
                  "amount": args.amount, "currency": args.currency.upper(), "message": args.message,
                  "createdAt": now_iso()}
        tip = check(pds.post("/xrpc/com.atproto.repo.createRecord",
                             json={"repo": did, "collection": TIP, "record": record}))

        listed = None
        deadline = time.monotonic() + args.timeout
        while listed is None and time.monotonic() < deadline:
            tips = fetch(api, "fm.openmusic.payment.getTips", payer=did)
            listed = next((t for t in tips["tips"] if t["uri"] == tip["uri"]), None) if tips else None
            if listed is None:
                time.sleep(0.5)
        settlement = listed.get("settlement") if listed else None
        print(json.dumps({"uri": tip["uri"], "artist": record["subject"], "amount": args.amount,
                          "currency": record["currency"], "indexed": listed is not None,
                          "settlement": settlement and settlement["status"]}))
        return 0 if listed is not None else 1


if __name__ == "__main__":
    sys.exit(main())
