"""Publishing our feeds in Bluesky: one ``app.bsky.feed.generator`` record per feed (record key =
the feed's name in ``feedgen.app.FEEDS``) in the publisher's repo, naming our feed generator DID
(lexicon ``app.bsky.feed.generator``: ``did``, ``displayName`` at most 24 graphemes,
``description``, ``createdAt``). Bluesky's AppView resolves that DID's ``#bsky_fg`` service and
calls its ``getFeedSkeleton``."""

from __future__ import annotations

from core.publish import PdsClient, now_iso
from feedgen.app import FEEDS, GENERATOR


def generator_record(feedgen_did: str, name: str) -> dict:
    """The ``app.bsky.feed.generator`` record of our feed ``name`` (a key of ``FEEDS``). Raises ``KeyError``."""
    display, description = FEEDS[name]
    return {"$type": GENERATOR, "did": feedgen_did, "displayName": display[:24], "description": description,
            "createdAt": now_iso()}


def publish_feeds(client: PdsClient, feedgen_did: str, names: list[str] | None = None) -> list[str]:
    """Create or replace the generator records of ``names`` (default: every feed) in ``client``'s repo
    (``com.atproto.repo.putRecord``: publishing again updates them). Returns the feeds' AT-URIs.
    Raises ``core.publish.PublishError`` when the PDS refuses."""
    uris = []
    for name in names or list(FEEDS):
        out = client._call("POST", "com.atproto.repo.putRecord", json={
            "repo": client.did, "collection": GENERATOR, "rkey": name,
            "record": generator_record(feedgen_did, name)})
        uris.append(out["uri"])
    return uris
