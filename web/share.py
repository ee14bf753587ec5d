"""Share to Bluesky (issue 13): from a track or album page, a signed-in user posts an
``app.bsky.feed.post`` to **their own PDS** through their OAuth session (``web.oauth.client.UserSession``;
the app's scope ``transition:generic`` covers ``app.bsky.*`` writes), with the text they wrote
(prefilled "title — artist <page link>"), a link facet on every http(s) URL in it (byte offsets,
lexicon ``app.bsky.richtext.facet``) and an ``app.bsky.embed.external`` card: ``uri`` our page,
``title``, ``description`` ("by artist · Open Music"), and ``thumb`` the artwork uploaded as a blob to
the user's PDS when the record has artwork (at most ``MAX_THUMB_BYTES``; without it, no thumb).
The post reaches our own feed generator through the firehose like any other share (``indexer.share``).

Route: ``POST /share/bluesky`` (signed in, CSRF-checked; ``uri`` of a track or album, ``text`` at
most ``MAX_POST_CHARS`` characters and ``MAX_POST_BYTES`` bytes (Bluesky allows 300 graphemes), ``key``
a TID made when the page was rendered: the same form sent twice writes one post). It answers 303 to
the page with ``?shared=<rkey>#bsky-share``, where the page confirms with a link to the post on
bsky.app. Bad input (empty or too long text, a subject we do not index, a forged CSRF token) gets an
error page and writes nothing. No JavaScript is needed."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from core.lexicons import ALBUM, is_track_uri
from core.publish import now_iso
from core.tid import is_tid
from web.errors import PageError
from web.oauth.client import PdsError, SessionEnded, UserSession
from web.pages import album_path, track_path

if TYPE_CHECKING:
    from web.app import WebApp
    from web.pages import Pages

log = logging.getLogger("openmusic.web")
POST = "app.bsky.feed.post"
#: Longest post text: Bluesky's 300 graphemes, counted here as characters (never more graphemes than
#: characters), and the lexicon's 3000 bytes.
MAX_POST_CHARS, MAX_POST_BYTES = 300, 3000
#: Largest artwork uploaded as the card's thumb (lexicon ``app.bsky.embed.external``: 1,000,000 bytes).
MAX_THUMB_BYTES = 1_000_000
THUMB_TYPES = ("image/jpeg", "image/png", "image/webp")
#: Pages with the share form.
SHARE_PAGES = ("track.html", "album.html")
_URL = re.compile(r"https?://[^\s<>\"']+")
_TRAILING = ".,!?;:)]}>\"'"


def bsky_post_url(uri: str) -> str:
    """``at://did/app.bsky.feed.post/rkey`` -> ``https://bsky.app/profile/did/post/rkey``."""
    did, _, rkey = uri.removeprefix("at://").partition(f"/{POST}/")
    return f"https://bsky.app/profile/{did}/post/{rkey}"


def link_facets(text: str) -> list[dict[str, Any]]:
    """``app.bsky.richtext.facet`` link facets for every http(s) URL in ``text`` (byte offsets into
    its UTF-8; trailing punctuation is not part of a link)."""
    facets = []
    for m in _URL.finditer(text):
        url = m.group(0).rstrip(_TRAILING)
        if len(url) < 10:
            continue
        start = len(text[:m.start()].encode("utf-8"))
        facets.append({"index": {"byteStart": start, "byteEnd": start + len(url.encode("utf-8"))},
                       "features": [{"$type": "app.bsky.richtext.facet#link", "uri": url}]})
    return facets


class Share:
    """The Share to Bluesky form and endpoint over a started ``WebApp`` and its ``Pages``."""

    def __init__(self, web: WebApp, pages: Pages) -> None:
        self.web = web
        self.pages = pages
        self.site = web.settings.base_url.rstrip("/")
        web.templates.globals.update(max_post_chars=MAX_POST_CHARS)
        pages.context_providers.append(self.provide)

    def routes(self) -> list[BaseRoute]:
        return [Route("/share/bluesky", self.share, methods=["POST"])]

    def page_of(self, uri: str) -> str:
        """Our page's full URL for a track or album AT-URI."""
        return self.site + (track_path(uri) if is_track_uri(uri) else album_path(uri))

    def default_text(self, title: str, artist: str, page: str) -> str:
        """The prefilled post text: "title — artist <link>", shortened to fit ``MAX_POST_CHARS``."""
        _ = self.web.templates.gettext
        head = _("%(title)s — %(artist)s") % {"title": title, "artist": artist}
        room = MAX_POST_CHARS - len(page) - 1
        if len(head) > room:
            head = head[:max(0, room - 1)] + "…"
        return f"{head} {page}"

    async def provide(self, request: Request, name: str, context: dict[str, Any]) -> dict[str, Any]:
        """A ``Pages.context_providers`` entry: ``bsky_share`` (``uri``, ``page``, ``text``, and
        ``posted``, the bsky.app link after a share) for a signed-in viewer on a track or album page."""
        if name not in SHARE_PAGES:
            return {}
        user, _token = await self.pages.viewer(request)
        if user is None:
            return {}
        subject = context["track"] if name == "track.html" else context["album"]
        who = subject["artist"].get("displayName") or subject["artist"].get("handle") or ""
        page = self.page_of(subject["uri"])
        shared = request.query_params.get("shared", "")
        posted = bsky_post_url(f"at://{user.did}/{POST}/{shared}") if is_tid(shared) else None
        return {"bsky_share": {"uri": subject["uri"], "page": page, "posted": posted,
                               "text": self.default_text(subject["title"], who, page)}}

    async def share(self, request: Request) -> Response:
        """POST /share/bluesky: see the module docstring."""
        user: UserSession | None = None
        _ = self.web.templates.gettext
        try:
            user, form = await self.pages._signed_in_form(request)
            key = form.get("key", "")
            if not is_tid(key):
                raise PageError(400, _("Bad form"), _("This form is damaged; reload the page."))
            uri = form.get("uri", "")
            if is_track_uri(uri):
                subject = (await self.pages.query("fm.openmusic.catalog.getTrack", uri=uri))["track"]
            elif f"/{ALBUM}/" in uri:
                subject = (await self.pages.query("fm.openmusic.catalog.getAlbum", uri=uri))["album"]
            else:
                raise PageError(400, _("Cannot share"), _("Only tracks and albums can be shared from here."))
            text = form.get("text", "").replace("\r\n", "\n").strip()
            if not text:
                raise PageError(400, _("Cannot share"), _("Write something to post."))
            if len(text) > MAX_POST_CHARS or len(text.encode("utf-8")) > MAX_POST_BYTES:
                raise PageError(400, _("Cannot share"), _(
                    "A Bluesky post has at most %(most)s characters; this one has %(count)s.") % {
                        "most": MAX_POST_CHARS, "count": len(text)})
            record = await self.post_record(user, subject, text)
            got = await user.create_record_once(POST, record, key)
        except PageError as exc:
            return self.web.error_page(exc.status, exc.title, exc.message, user=user)
        except SessionEnded:
            return RedirectResponse("/login", status_code=303)
        except PdsError as exc:
            log.warning("a Bluesky share by %s failed: %s", user.did if user else "?", exc)
            return self.web.error_page(502, _("Your PDS refused"), _("Your PDS did not save this: %(why)s") % {
                "why": str(exc)[:300]}, user=user)
        rkey = str(got.get("uri", "")).rsplit("/", 1)[-1] or key
        path = self.page_of(subject["uri"])[len(self.site):]
        return RedirectResponse(f"{path}?shared={rkey}#bsky-share", status_code=303)

    async def post_record(self, user: UserSession, subject: dict[str, Any], text: str) -> dict[str, Any]:
        """The ``app.bsky.feed.post`` record for ``subject`` (a track or album view) with ``text``; its
        artwork, when there is one, uploaded to ``user``'s PDS as the card's thumb. Raises ``PdsError``."""
        _ = self.web.templates.gettext
        who = subject["artist"].get("displayName") or subject["artist"].get("handle") or ""
        external: dict[str, Any] = {"uri": self.page_of(subject["uri"]), "title": subject["title"][:300],
                                    "description": _("by %(artist)s · Open Music") % {"artist": who}}
        thumb = await self.artwork(subject.get("artworkUrl"))
        if thumb is not None:
            external["thumb"] = await user.upload_blob(*thumb)
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": now_iso(),
                                  "embed": {"$type": "app.bsky.embed.external", "external": external}}
        facets = link_facets(text)
        if facets:
            record["facets"] = facets
        return record

    async def artwork(self, url: object) -> tuple[bytes, str] | None:
        """The artwork's bytes and type, read from our own image endpoint (``/image/{did}/{cid}``, which
        serves only verified blobs), or None (no artwork, too large, not an image, unreachable)."""
        if not isinstance(url, str) or not url.startswith(self.site + "/image/") or self.web.api is None:
            return None
        try:
            resp = await self.web.api.get(url[len(self.site):])
        except Exception as exc:  # the card goes without a thumb rather than the post failing
            log.warning("artwork %s for a Bluesky card: %s", url, exc)
            return None
        mime = resp.headers.get("content-type", "").split(";")[0].strip()
        if resp.status_code != 200 or mime not in THUMB_TYPES or len(resp.content) > MAX_THUMB_BYTES:
            return None
        return resp.content, mime


def routes(web: WebApp, pages: Pages) -> list[BaseRoute]:
    """The room's routes (``web.app.routes``): ``POST /share/bluesky``; adds the form's context to
    the track and album pages."""
    return Share(web, pages).routes()
