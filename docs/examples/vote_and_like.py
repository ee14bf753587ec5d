#!/usr/bin/env python3
"""Like a track and vote it up from the listener's own PDS, then read both back from the AppView.

    python vote_and_like.py --pds https://pds.example --handle alice.example --password "$APP_PASSWORD" \
        --appview https://openmusic.example [--track AT-URI] [--direction up|down]

Steps (docs/developers.md, "Likes and votes"):
1. ``com.atproto.server.createSession`` on the listener's PDS.
2. ``fm.openmusic.catalog.getTrack`` on the AppView: the track's URI and CID for the strongRef
   (without ``--track``: the newest track).
3. ``com.atproto.repo.createRecord`` of an ``fm.openmusic.social.like`` (``subject``: strongRef,
   ``createdAt``) and of an ``fm.openmusic.social.vote`` (``subject``, ``direction`` ``up`` or
   ``down``, ``createdAt``). A listener's latest vote on a track is the one that counts; undo a
   like or vote with ``com.atproto.repo.deleteRecord``.
4. ``fm.openmusic.social.getActorLikes?actor=<did>`` and
   ``fm.openmusic.social.getVoteBreakdown?uri=<track>`` until both are there; the breakdown shows
   the vote's weight (thousandths of a vote) and why.

Prints one JSON object: ``like`` and ``vote`` (their URIs), ``weight``, ``reasons`` and ``indexed``.
Needs only httpx.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

import httpx

LIKE = "fm.openmusic.social.like"
VOTE = "fm.openmusic.social.vote"


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


def create(pds: httpx.Client, did: str, collection: str, record: dict) -> dict:
    """Write ``record`` in the user's repo; returns its ``{uri, cid}``."""
    return check(pds.post("/xrpc/com.atproto.repo.createRecord",
                          json={"repo": did, "collection": collection, "record": {"$type": collection, **record}}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pds", required=True, help="the listener's PDS URL")
    p.add_argument("--handle", required=True, help="the listener's handle or DID")
    p.add_argument("--password", default=os.environ.get("APP_PASSWORD"), help="app password (or APP_PASSWORD)")
    p.add_argument("--appview", required=True, help="the Open Music AppView URL")
    p.add_argument("--track", help="the track's AT-URI (default: the newest track)")
    p.add_argument("--direction", choices=["up", "down"], default="up")
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
        subject = {"uri": track["uri"], "cid": track["cid"]}
        like = create(pds, did, LIKE, {"subject": subject, "createdAt": now_iso()})
        vote = create(pds, did, VOTE, {"subject": subject, "direction": args.direction, "createdAt": now_iso()})

        liked, counted = False, None
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            likes = fetch(api, "fm.openmusic.social.getActorLikes", actor=did)
            liked = likes is not None and any(item["uri"] == like["uri"] for item in likes["likes"])
            votes = check(api.get("/xrpc/fm.openmusic.social.getVoteBreakdown",
                                  params={"uri": track["uri"], "limit": 100}))["votes"]
            counted = next((v for v in votes if v["uri"] == vote["uri"]), None)
            if liked and counted:
                break
            time.sleep(0.5)
        print(json.dumps({"track": track["uri"], "like": like["uri"], "vote": vote["uri"],
                          "weight": counted and counted["weight"], "reasons": counted and counted["reasons"],
                          "indexed": bool(liked and counted)}))
        return 0 if liked and counted else 1


if __name__ == "__main__":
    sys.exit(main())
