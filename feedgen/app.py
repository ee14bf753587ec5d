"""The feed generator's HTTP endpoints (atproto guide "Custom Feeds"; lexicons
``app.bsky.feed.describeFeedGenerator`` and ``app.bsky.feed.getFeedSkeleton``), served on our own
origin by the runtime, in front of the AppView:

- ``GET /xrpc/app.bsky.feed.describeFeedGenerator`` -> ``{did, feeds: [{uri}]}``: our feed
  generator DID and the AT-URIs of our feeds (``at://<publisher>/app.bsky.feed.generator/<name>``).
- ``GET /xrpc/app.bsky.feed.getFeedSkeleton?feed=<at-uri>&limit=1..100 (50)&cursor=`` ->
  ``{feed: [{post: at-uri}], cursor?}``. Feeds (``FEEDS``): ``fresh`` (music shared in the last 24
  hours) and ``artists-you-follow`` (shared by the accounts the viewer follows on Open Music; the
  viewer is the ``iss`` of the service-auth JWT Bluesky's AppView passes on, checked like every
  service-auth JWT of ours (``payments.auth.ServiceAuth``) with ``aud`` our feed generator DID, bare
  or ``#bsky_fg``, and ``lxm`` ``app.bsky.feed.getFeedSkeleton`` or ``app.bsky.feed.getFeed``). Without
  an ``Authorization`` header that feed is empty (a signed-out viewer follows no one); with a bad token
  it answers 401 ``AuthRequired`` / ``InvalidToken`` / ``ExpiredToken``. Errors are XRPC bodies:
  400 ``UnknownFeed`` (a feed we do not serve), 400 ``InvalidRequest`` (bad limit, cursor, feed URI).
- ``GET /.well-known/did.json`` when the feed generator DID is the did:web of our own host: the
  document with the ``#bsky_fg`` service (type ``BskyFeedGenerator``, endpoint our public URL),
  added to the payments document (``Payments.did_document``) when payments are on, so one document
  carries both services.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from appview.xrpc import XrpcError, invalid
from feedgen import skeleton
from payments.auth import AuthError, ServiceAuth

log = logging.getLogger("openmusic.feedgen")
GENERATOR = "app.bsky.feed.generator"
DESCRIBE = "app.bsky.feed.describeFeedGenerator"
GET_SKELETON = "app.bsky.feed.getFeedSkeleton"
GET_FEED = "app.bsky.feed.getFeed"
#: The fragment of our feed generator service in its DID document.
SERVICE_ID = "bsky_fg"
FRESH, FOLLOWING = "fresh", "artists-you-follow"
#: Our feeds: record key of the ``app.bsky.feed.generator`` record -> (display name, description).
FEEDS: dict[str, tuple[str, str]] = {
    FRESH: ("Fresh music", "Music from Open Music shared on Bluesky in the last 24 hours, newest first."),
    FOLLOWING: ("Artists you follow", "Music shared on Bluesky by the artists you follow on Open Music."),
}


class FeedGenerator:
    """Serves our feeds. ``did``: the feed generator DID; ``publisher``: the repo of the feed records
    ("" accepts any publisher); ``base_url``: our public URL (the service endpoint); ``execute``: a
    reader's ``execute(sql, params)``; ``auth``: a ``ServiceAuth`` (its audiences are set here to
    ``did`` and ``did#bsky_fg``); ``base_document()``: the did:web document of other services on this
    host, or None."""

    def __init__(self, did: str, publisher: str, base_url: str,
                 execute: Callable[..., Awaitable[Any]], auth: ServiceAuth | None,
                 base_document: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
        self.did = did
        self.publisher = publisher
        self.base_url = base_url.rstrip("/")
        self.execute = execute
        self.auth = auth
        if auth is not None:
            auth.service_did = did
            auth.audiences = {did, f"{did}#{SERVICE_ID}"}
        self.base_document = base_document

    def feed_uri(self, name: str) -> str:
        """The AT-URI of our feed ``name``."""
        return f"at://{self.publisher or self.did}/{GENERATOR}/{name}"

    def service_entry(self) -> dict[str, str]:
        """Our entry in the DID document's ``service`` array."""
        return {"id": f"#{SERVICE_ID}", "type": "BskyFeedGenerator", "serviceEndpoint": self.base_url}

    def serves_did_document(self) -> bool:
        """Whether our DID is the did:web of our own host (then we serve its document)."""
        host = self.base_url.split("://", 1)[-1].split("/")[0]
        return self.did == "did:web:" + host.replace(":", "%3A")

    def did_document(self) -> dict[str, Any]:
        """The did:web document: the other services' (if any) plus ``#bsky_fg``."""
        doc = self.base_document() or {"@context": ["https://www.w3.org/ns/did/v1"], "id": self.did}
        doc = dict(doc)
        services = [s for s in doc.get("service", []) if s.get("id") not in (f"#{SERVICE_ID}", f"{self.did}#{SERVICE_ID}")]
        doc["service"] = [*services, self.service_entry()]
        return doc

    def routes(self) -> list[BaseRoute]:
        """The routes, to mount in front of the AppView's."""
        routes: list[BaseRoute] = [Route(f"/xrpc/{DESCRIBE}", self.describe, methods=["GET", "HEAD"]),
                                   Route(f"/xrpc/{GET_SKELETON}", self.get_skeleton, methods=["GET", "HEAD"])]
        if self.serves_did_document():
            routes.append(Route("/.well-known/did.json", self.well_known, methods=["GET", "HEAD"]))
        return routes

    async def well_known(self, request: Request) -> Response:
        """GET /.well-known/did.json."""
        return JSONResponse(self.did_document())

    async def describe(self, request: Request) -> Response:
        """GET describeFeedGenerator: ``{did, feeds: [{uri}]}``."""
        return JSONResponse({"did": self.did, "feeds": [{"uri": self.feed_uri(name)} for name in FEEDS]})

    def feed_name(self, feed: str) -> str:
        """The name of the feed an AT-URI names. Raises ``XrpcError`` (``InvalidRequest``, ``UnknownFeed``)."""
        if not feed.startswith("at://") or len(feed) > 2048:
            raise invalid("feed must be the AT-URI of an app.bsky.feed.generator record")
        did, _, rest = feed[len("at://"):].partition("/")
        collection, _, name = rest.partition("/")
        if collection != GENERATOR or name not in FEEDS or (self.publisher and did != self.publisher):
            raise XrpcError(400, "UnknownFeed", f"this feed generator does not serve {feed[:300]}")
        return name

    async def viewer(self, request: Request) -> str | None:
        """The viewer's DID from the service-auth JWT, or None without an ``Authorization`` header.
        Raises ``AuthError`` for a token that does not verify."""
        header = request.headers.get("authorization")
        if not header or self.auth is None:
            return None
        try:
            return await self.auth.verify(header, GET_SKELETON)
        except AuthError as exc:
            if "lxm" not in str(exc):
                raise
            return await self.auth.verify(header, GET_FEED)  # the AppView may pass getFeed's token on

    async def get_skeleton(self, request: Request) -> Response:
        """GET getFeedSkeleton: see the module docstring."""
        try:
            q = request.query_params
            feed = q.get("feed")
            if not feed:
                raise invalid("feed is required")
            name = self.feed_name(feed)
            limit_text = q.get("limit", str(skeleton.DEFAULT_LIMIT))
            if not limit_text.isdigit() or not skeleton.MIN_LIMIT <= int(limit_text) <= skeleton.MAX_LIMIT:
                raise invalid(f"limit must be an integer from {skeleton.MIN_LIMIT} to {skeleton.MAX_LIMIT}")
            limit, cursor = int(limit_text), q.get("cursor") or None
            if name == FRESH:
                body = await skeleton.fresh(self.execute, limit, cursor)
            else:
                try:
                    viewer = await self.viewer(request)
                except AuthError as exc:
                    return JSONResponse({"error": exc.error, "message": str(exc)}, status_code=401,
                                        headers={"WWW-Authenticate": 'Bearer realm="feedgen"'})
                body = await skeleton.following(self.execute, viewer, limit, cursor) if viewer else {"feed": []}
            return JSONResponse(body)
        except skeleton.BadCursor as exc:
            return invalid(f"bad cursor: {exc}").response()
        except XrpcError as exc:
            return exc.response()
        except Exception:
            log.exception("%s failed", GET_SKELETON)
            return XrpcError(500, "InternalServerError", "internal error").response()
