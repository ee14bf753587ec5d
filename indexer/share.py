"""``app.bsky.feed.post`` records that share an Open Music page -> table ``share`` (issue 13, the
Bluesky feed generator in ``feedgen``).

A post is a *share* when a link to one of our track, album or playlist pages
(``{site}/track/{did}/{rkey}``, ``/album/...``, ``/playlist/...``; ``site`` one of ``SITES``, the
public URL(s) set by the runtime through ``configure``) is its ``app.bsky.embed.external`` card's
``uri`` (directly, or as the ``media`` of ``app.bsky.embed.recordWithMedia``), a ``#link`` facet's
``uri``, or written out in its ``text`` (checked in that order; the first one found is the post's
subject). Every other post is dropped before it is decoded (``ShareFilter``, the decoder's
``RecordKeep`` for this collection): only shares ever reach ``check``, which rejects what slips
through (reason ``not_a_share``).

We hold no ``app.bsky`` lexicons, so ``check`` validates by hand the fields read here, after the
lexicon ``app.bsky.feed.post`` (text at most 3000 bytes, ``createdAt`` a datetime, ``facets`` and
``embed`` shapes); the rest of the record is stored as it came, in ``record``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import cbrrr

from core.db import normalize_datetime, sort_at
from core.lexicons import ALBUM, MAX_RECORD_BYTES, PLAYLIST, TRACK, RecordInvalid
from indexer.base import WriteContext

COLLECTION = "app.bsky.feed.post"
#: This module's records are not validated against a lexicon file of ours (``indexer.core.apply_op``).
LEXICON = False
#: Page kind -> the collection of the record it shows.
PAGE_KINDS = {"track": TRACK, "album": ALBUM, "playlist": PLAYLIST}
#: Origins (``scheme://host[:port]``, no trailing slash) whose pages count: ``configure`` fills it.
SITES: set[str] = set()
#: ``app.bsky.feed.post`` limits (lexicon): text at most 3000 bytes (300 graphemes).
MAX_TEXT_BYTES = 3000
MAX_URI_CHARS = 8192
_PATH = re.compile(r"/(track|album|playlist)/(did:[a-z]+:[A-Za-z0-9._:%-]{1,2000})/([A-Za-z0-9._:~-]{1,512})"
                   r"(?=$|[?#/\s)\]>\"'.,!;])")
_URL = re.compile(r"https?://[^\s<>\"']{1,8192}")


def configure(urls: Iterable[str]) -> None:
    """Accept pages of each of ``urls`` (our public URL and any other it is reached at). A loopback
    origin brings its twin (``localhost`` <-> ``127.0.0.1``), as the web app's own pages do."""
    for url in urls:
        url = url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            continue
        SITES.add(url)
        if "://localhost:" in url:
            SITES.add(url.replace("://localhost:", "://127.0.0.1:"))
        if "://127.0.0.1:" in url:
            SITES.add(url.replace("://127.0.0.1:", "://localhost:"))


def needles() -> tuple[bytes, ...]:
    """The bytes every sharing record holds: our sites' ``host[:port]`` in UTF-8."""
    return tuple(sorted({urlsplit(s).netloc.encode() for s in SITES if urlsplit(s).netloc}))


def page_subject(url: Any) -> str | None:
    """The AT-URI of the record a page URL of ours shows (``https://site/track/did/rkey`` ->
    ``at://did/fm.openmusic.catalog.track/rkey``), or None when ``url`` is not one of our pages."""
    if not isinstance(url, str) or len(url) > MAX_URI_CHARS:
        return None
    for site in SITES:
        if url.startswith(site + "/"):
            m = _PATH.match(url, len(site))
            if m:
                return f"at://{m.group(2)}/{PAGE_KINDS[m.group(1)]}/{m.group(3)}"
    return None


def _external(embed: Any) -> Any:
    """The ``app.bsky.embed.external#external`` map of an embed (direct or in recordWithMedia), or None."""
    if not isinstance(embed, dict):
        return None
    if embed.get("$type") == "app.bsky.embed.recordWithMedia":
        embed = embed.get("media")
        if not isinstance(embed, dict):
            return None
    if embed.get("$type") == "app.bsky.embed.external" and isinstance(embed.get("external"), dict):
        return embed["external"]
    return None


def find_subject(record: dict[str, Any]) -> str | None:
    """The AT-URI of the first of our records ``record`` (a post) links to: its card, then its link
    facets, then URLs written in its text; None when it shares nothing of ours."""
    external = _external(record.get("embed"))
    if external is not None and (got := page_subject(external.get("uri"))):
        return got
    facets = record.get("facets")
    if isinstance(facets, list):
        for facet in facets[:100]:
            features = facet.get("features") if isinstance(facet, dict) else None
            for feature in features[:20] if isinstance(features, list) else ():
                if (isinstance(feature, dict) and feature.get("$type") == "app.bsky.richtext.facet#link"
                        and (got := page_subject(feature.get("uri")))):
                    return got
    text = record.get("text")
    if isinstance(text, str) and len(text) <= MAX_TEXT_BYTES:
        for m in _URL.finditer(text):
            if got := page_subject(m.group(0).rstrip(".,!?;:)]}>\"'")):
                return got
    return None


def check(record: dict[str, Any]) -> None:
    """Validate the fields we read (lexicon ``app.bsky.feed.post``: ``text`` a string of at most 3000
    UTF-8 bytes, ``createdAt`` a datetime, ``facets`` an array of maps, ``embed`` a map with a
    ``$type``) and require a link to one of our pages. Raises ``RecordInvalid`` (``lexicon``, or
    ``not_a_share`` for a post that shares nothing of ours)."""
    text = record.get("text")
    if not isinstance(text, str) or len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise RecordInvalid("lexicon", "post text must be a string of at most 3000 bytes")
    if not isinstance(record.get("createdAt"), str) or normalize_datetime(record["createdAt"]) is None:
        raise RecordInvalid("lexicon", "post createdAt must be a datetime")
    facets = record.get("facets")
    if facets is not None and (not isinstance(facets, list) or not all(isinstance(f, dict) for f in facets)):
        raise RecordInvalid("lexicon", "post facets must be an array of facets")
    embed = record.get("embed")
    if embed is not None and (not isinstance(embed, dict) or not isinstance(embed.get("$type"), str)):
        raise RecordInvalid("lexicon", "post embed must be a typed object")
    if find_subject(record) is None:
        raise RecordInvalid("not_a_share", "this post links to no Open Music page")


def insert(ctx: WriteContext, record: dict[str, Any]) -> None:
    """Index one share: post URI, author, CID, subject (our record's AT-URI), times."""
    subject = find_subject(record)
    if subject is None:  # (``check`` ran first)
        raise RecordInvalid("not_a_share", "this post links to no Open Music page")
    created = normalize_datetime(record["createdAt"]) or ctx.now
    ctx.tx.execute(
        "INSERT INTO share (uri, did, rkey, cid, subject, created_at, sort_at, indexed_at) VALUES (?,?,?,?,?,?,?,?)",
        (ctx.uri, ctx.did, ctx.rkey, ctx.cid, subject, created, sort_at(record["createdAt"], ctx.now), ctx.now))


def delete(ctx: WriteContext) -> None:
    """Remove a share (post deleted, updated, or its account purged)."""
    ctx.tx.execute("DELETE FROM share WHERE uri = ?", (ctx.uri,))


class ShareFilter:
    """The decoder's ``RecordKeep`` for ``app.bsky.feed.post`` (``firehose.events.Selection``): a
    post is kept only when its bytes hold one of our sites' hosts (``needles``), first searched in
    the whole frame, then in the record block, and then it links to one of our pages. Deletes (and updates)
    are kept for ``authors``: accounts that have shared (loaded by the indexer from ``share``, and
    added here as soon as a sharing block is seen, so a delete decoded before the create is applied
    is not lost)."""

    def __init__(self, authors: Iterable[str] = ()) -> None:
        self.authors: set[str] = set(authors)
        self._sites: frozenset[str] = frozenset()
        self._needles: tuple[bytes, ...] = ()

    def _current(self) -> tuple[bytes, ...]:
        if self._sites != SITES:
            self._sites = frozenset(SITES)
            self._needles = needles()
        return self._needles

    def frame(self, raw: bytes) -> bool:
        """Whether ``raw`` (a whole frame) holds one of our hosts."""
        return any(n in raw for n in self._current())

    def block(self, did: str, rkey: str, block: bytes) -> bool:
        """Whether the record block (raw DAG-CBOR) is a post that shares one of our pages: a bytes
        search for our hosts, then, for the few blocks that hold one, ``find_subject`` on the decoded
        record (a post that merely names our site is dropped too). A kept post's ``did`` joins ``authors``."""
        if not any(n in block for n in self._current()) or len(block) > MAX_RECORD_BYTES:
            return False
        try:
            record = cbrrr.decode_dag_cbor(block)
        except Exception:
            return False  # not DAG-CBOR: not a post of ours
        if not isinstance(record, dict) or find_subject(record) is None:
            return False
        self.authors.add(did)
        return True

    def removal(self, did: str, rkey: str) -> bool:
        """Whether ``did`` has shared (so its deletes may remove a share)."""
        return did in self.authors
