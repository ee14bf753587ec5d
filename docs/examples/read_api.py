#!/usr/bin/env python3
"""Read Open Music's public XRPC API: search the catalog, open a track, its stats, a chart and an
account's listening history. No account or token is needed.

    python read_api.py --appview https://openmusic.example [--q jazz] [--actor alice.example]

Every query is ``GET <AppView>/xrpc/<NSID>?<params>`` answering JSON shaped by its lexicon
(``/lexicons/<NSID>`` on the AppView's web app shows each one); errors are ``{"error", "message"}``
with a 4xx/5xx status. Lists are paged with ``limit`` and the ``cursor`` the previous page returned.

Prints one JSON object: what each call returned, shortened. Needs only httpx.
"""

from __future__ import annotations

import argparse
import json
import sys

import httpx


def get(api: httpx.Client, nsid: str, **params) -> dict:
    """``GET /xrpc/<nsid>``; exits with the XRPC error on a non-2xx answer."""
    resp = api.get(f"/xrpc/{nsid}", params={k: v for k, v in params.items() if v is not None})
    if resp.status_code >= 300:
        sys.exit(f"{nsid}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--appview", required=True, help="the Open Music AppView URL")
    p.add_argument("--q", default="", help="search words (default: the newest tracks)")
    p.add_argument("--actor", help="a handle or DID whose plays to list")
    args = p.parse_args()

    with httpx.Client(base_url=args.appview, timeout=30) as api:
        out: dict = {}
        found = get(api, "fm.openmusic.catalog.searchTracks", q=args.q or None, sort="recent", limit=5)
        out["search"] = [{"uri": t["uri"], "title": t["title"], "artist": t["artist"].get("handle")}
                         for t in found["tracks"]]
        # Page two, if there is one: the same query with the cursor of page one.
        if found.get("cursor"):
            more = get(api, "fm.openmusic.catalog.searchTracks", q=args.q or None, sort="recent", limit=5,
                       cursor=found["cursor"])
            out["page2"] = [t["uri"] for t in more["tracks"]]
        if found["tracks"]:
            uri = found["tracks"][0]["uri"]
            track = get(api, "fm.openmusic.catalog.getTrack", uri=uri)["track"]
            out["track"] = {"title": track["title"], "durationMs": track["durationMs"], "audioUrl": track["audioUrl"]}
            out["stats"] = get(api, "fm.openmusic.listen.getTrackStats", uri=uri)
        chart = get(api, "fm.openmusic.feed.getChart", chart="top", period="week", limit=5)
        out["chart"] = [t["uri"] for t in chart["tracks"]]
        if args.actor:
            out["plays"] = [{"uri": p["uri"], "listenedMs": p["listenedMs"]}
                            for p in get(api, "fm.openmusic.listen.getPlays", actor=args.actor)["plays"]]
        print(json.dumps(out))
        return 0


if __name__ == "__main__":
    sys.exit(main())
