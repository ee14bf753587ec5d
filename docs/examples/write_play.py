#!/usr/bin/env python3
"""Write a play of an Open Music track to the listener's own PDS, with the segments heard, and wait
until the AppView has indexed it.

    python write_play.py --pds https://pds.example --handle alice.example --password "$APP_PASSWORD" \
        --appview https://openmusic.example [--track at://did:plc:.../fm.openmusic.catalog.track/3k...]

Steps (docs/developers.md, "Plays"):
1. ``com.atproto.server.createSession`` on the listener's PDS (an app password; an OAuth session with
   the ``fm.openmusic.listen.play`` scope works the same).
2. ``fm.openmusic.catalog.getTrack`` on the AppView for the track's CID and duration (without
   ``--track``: the newest track, ``fm.openmusic.catalog.searchTracks?sort=recent``).
3. ``com.atproto.repo.createRecord`` of an ``fm.openmusic.listen.play`` in the listener's repo:
   ``track`` (strongRef), ``createdAt``, ``listenedMs``, ``segments`` ([{startMs, endMs}] of audio
   actually heard), ``completed``, ``client``.
4. ``fm.openmusic.listen.getPlays?actor=<did>`` until the play is there (the AppView reads the
   firehose, so this takes a moment).

Prints one JSON object: the play's ``uri`` and ``cid``, the ``segments`` written, and ``indexed``.
Needs only httpx (``pip install httpx``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

import httpx

PLAY = "fm.openmusic.listen.play"


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


def pick_track(appview: httpx.Client, uri: str | None) -> dict:
    """The AppView's view of the track ``uri`` (default: the newest track)."""
    if not uri:
        found = check(appview.get("/xrpc/fm.openmusic.catalog.searchTracks", params={"sort": "recent", "limit": 1}))
        if not found["tracks"]:
            sys.exit("the AppView has no track yet: give --track")
        uri = found["tracks"][0]["uri"]
    return check(appview.get("/xrpc/fm.openmusic.catalog.getTrack", params={"uri": uri}))["track"]


def heard_segments(duration_ms: int) -> list[dict]:
    """An example listening session: the first half, then a skip to the last quarter, to the end."""
    return [{"startMs": 0, "endMs": duration_ms // 2},
            {"startMs": duration_ms - duration_ms // 4, "endMs": duration_ms}]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pds", required=True, help="the listener's PDS URL")
    p.add_argument("--handle", required=True, help="the listener's handle or DID")
    p.add_argument("--password", default=os.environ.get("APP_PASSWORD"), help="app password (or APP_PASSWORD)")
    p.add_argument("--appview", required=True, help="the Open Music AppView URL")
    p.add_argument("--track", help="the track's AT-URI (default: the newest track)")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for the AppView to index the play")
    args = p.parse_args()
    if not args.password:
        p.error("give --password or set APP_PASSWORD")

    with httpx.Client(base_url=args.pds, timeout=30) as pds, httpx.Client(base_url=args.appview, timeout=30) as api:
        did = login(pds, args.handle, args.password)
        track = pick_track(api, args.track)
        segments = heard_segments(track["durationMs"])
        record = {
            "$type": PLAY,
            "track": {"uri": track["uri"], "cid": track["cid"]},
            "createdAt": now_iso(),
            "listenedMs": sum(s["endMs"] - s["startMs"] for s in segments),
            "segments": segments,
            "completed": segments[-1]["endMs"] >= track["durationMs"],
            "client": "example-player/1.0",
        }
        written = check(pds.post("/xrpc/com.atproto.repo.createRecord",
                                 json={"repo": did, "collection": PLAY, "record": record}))

        indexed = False
        deadline = time.monotonic() + args.timeout
        while not indexed and time.monotonic() < deadline:
            plays = fetch(api, "fm.openmusic.listen.getPlays", actor=did, limit=25)
            indexed = plays is not None and any(play["uri"] == written["uri"] for play in plays["plays"])
            if not indexed:
                time.sleep(0.5)
        print(json.dumps({"uri": written["uri"], "cid": written["cid"], "track": track["uri"],
                          "segments": segments, "listenedMs": record["listenedMs"], "indexed": indexed}))
        return 0 if indexed else 1


if __name__ == "__main__":
    sys.exit(main())
