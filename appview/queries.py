"""The ``fm.openmusic.*`` query handlers. Each takes the ``ViewContext`` and validated params and
returns the output object of its lexicon, or raises ``XrpcError``."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from appview.charts import CHART_QUERIES
from appview.feeds import FEED_QUERIES
from appview.playlists import PLAYLIST_QUERIES
from appview.recommend import RECOMMEND_QUERIES
from appview.reputation import REPUTATION_QUERIES
from appview.social import SOCIAL_QUERIES
from appview.views import (
    ACTIVE,
    LISTED,
    ViewContext,
    artist_views,
    ordered_track_views,
    resolve_actor,
    track_views,
)
from appview.views import shown as shown_rule
from appview.xrpc import decode_cursor, encode_cursor, invalid, not_found
from core.lexicons import TRACK, is_track_uri
from indexer.standing import IN_STANDING

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]
_WORD = re.compile(r"\w+", re.UNICODE)


def _check_track_uri(uri: str) -> None:
    if not is_track_uri(uri):
        raise invalid(f"{uri} is not a {TRACK} AT-URI")


async def get_track(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getTrack"""
    _check_track_uri(p["uri"])
    views = await track_views(ctx, [p["uri"]], listed=False)  # a direct lookup: !hide does not apply
    if p["uri"] not in views:
        raise not_found("NotFound", f"track {p['uri']} is not indexed")
    return {"track": views[p["uri"]]}


async def get_tracks(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getTracks"""
    return {"tracks": await ordered_track_views(ctx, list(dict.fromkeys(p["uris"])), listed=False)}


async def search_tracks(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.searchTracks: FTS5 prefix match on every word of ``q`` (AND), filters,
    sort by newest (``sort_at``) or by plays; keyset pagination.

    With words and newest first, the FTS index is walked by ``search_key`` (ordered like
    ``sort_at``, see ``indexer.search``) and stops after a page, however many tracks match; the
    cursor is then ``(search_key, uri)``, otherwise ``(sort_at or plays, uri)``. With words sorted
    by plays (and no filter), the matches' ``track_rank`` rows are sorted instead (``_search_by_plays``)."""
    sort = p["sort"]
    if sort not in ("recent", "plays"):
        raise invalid("sort must be recent or plays")
    where, args = [LISTED], []
    words = _WORD.findall(p.get("q") or "")[:16]
    match = " ".join('"' + w.replace('"', "") + '"*' for w in words)
    if words and sort == "plays" and not p.get("genre") and not p.get("aiLevel"):
        return await _search_by_plays(ctx, match, p["limit"], decode_cursor(p.get("cursor"), (int, str)))
    if p.get("genre"):
        where.append("t.genre_norm = ?")
        args.append(p["genre"].strip().lower())
    if p.get("aiLevel"):
        where.append("t.ai_level = ?")
        args.append(p["aiLevel"])
    # the cursor's sort key: search_key (int) walking the FTS index, plays (int), or sort_at (str)
    after = decode_cursor(p.get("cursor"), (int if words or sort == "plays" else str, str))
    if words and sort == "recent":
        key, uri, source = "track_fts.rowid", "t.uri", "track_fts JOIN track t ON t.search_key = track_fts.rowid"
        where.insert(0, "track_fts MATCH ?")
        args.insert(0, match)
        if after:
            where.append("track_fts.rowid < ?")
            args.append(after[0])
        order = "track_fts.rowid DESC"
    else:
        if words:
            where.append("t.search_key IN (SELECT rowid FROM track_fts WHERE track_fts MATCH ?)")
            args.append(match)
        if sort == "recent":
            key, uri, source = "t.sort_at", "t.uri", "track t"
        else:  # walk the (plays DESC, track_uri DESC) index; every indexed track has a stats row
            key, uri, source = "s.plays", "s.track_uri", "track_stats s JOIN track t ON t.uri = s.track_uri"
        if after:
            where.append(f"({key}, {uri}) < (?, ?)")
            args += [after[0], after[1]]
        order = f"{key} DESC, {uri} DESC"
    sql = (f"SELECT {uri}, {key} FROM {source} LEFT JOIN actor a ON a.did = t.did "
           f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?")
    cur = await ctx.db.execute(sql, [*args, p["limit"] + 1])
    rows = await cur.fetchall()
    out: dict[str, Any] = {"tracks": await ordered_track_views(ctx, [r[0] for r in rows[:p["limit"]]])}
    if len(rows) > p["limit"]:
        last = rows[p["limit"] - 1]
        out["cursor"] = encode_cursor(last[1], last[0])
    return out


async def _search_by_plays(ctx: ViewContext, match: str, limit: int, after: tuple | None) -> dict[str, Any]:
    """Words sorted by plays (``searchTracks``' common case): the matches' ``track_rank`` rows (play
    count and URI under the FTS row ID) are sorted, and only a page of candidates at a time is
    checked for an active artist and hydrated, so a word matching thousands of tracks costs a sort
    of small integer rows. Cursor ``(plays, uri)``, as on the general path."""
    picked: list[tuple[str, int]] = []
    batch = limit + 1
    while len(picked) <= limit:
        cond, args = "", [match]
        if after:
            cond, args = "AND (r.plays, r.uri) < (?, ?)", [match, after[0], after[1]]
        cur = await ctx.db.execute(
            f"SELECT r.uri, r.plays FROM track_fts JOIN track_rank r ON r.search_key = track_fts.rowid "
            f"WHERE track_fts MATCH ? {cond} ORDER BY r.plays DESC, r.uri DESC LIMIT ?", [*args, batch])
        rows = await cur.fetchall()
        if not rows:
            break
        marks = ",".join("?" * len(rows))
        cur = await ctx.db.execute(f"SELECT t.uri FROM track t LEFT JOIN actor a ON a.did = t.did "
                                   f"WHERE t.uri IN ({marks}) AND {LISTED}", [r[0] for r in rows])
        active = {r[0] for r in await cur.fetchall()}
        picked += [(uri, plays) for uri, plays in rows if uri in active]
        if len(rows) < batch:
            break
        after = (rows[-1][1], rows[-1][0])
        batch = min(batch * 4, 1000)  # many inactive artists among the matches: look further, faster
    page = picked[:limit]
    out: dict[str, Any] = {"tracks": await ordered_track_views(ctx, [uri for uri, _ in page])}
    if len(picked) > limit:
        out["cursor"] = encode_cursor(page[-1][1], page[-1][0])
    return out


async def get_artist_tracks(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getArtistTracks: newest first."""
    did = await resolve_actor(ctx, p["actor"])
    args: list[Any] = [did]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = "AND (sort_at < ? OR (sort_at = ? AND uri < ?))"
        args += [after[0], after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT uri, sort_at FROM track WHERE did = ? {cond} ORDER BY sort_at DESC, uri DESC LIMIT ?",
        [*args, p["limit"] + 1])
    rows = await cur.fetchall()
    out: dict[str, Any] = {"artist": (await artist_views(ctx, [did]))[did],
                           "tracks": await ordered_track_views(ctx, [r[0] for r in rows[:p["limit"]]])}
    if len(rows) > p["limit"]:
        last = rows[p["limit"] - 1]
        out["cursor"] = encode_cursor(last[1], last[0])
    return out


async def get_album(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.catalog.getAlbum: the album with its indexed tracks, in the album's order."""
    cur = await ctx.db.execute(
        f"SELECT al.uri, al.did, al.cid, al.title, al.artwork_cid, r.json, r.indexed_at FROM album al "
        f"JOIN record r ON r.uri = al.uri LEFT JOIN actor a ON a.did = al.did WHERE al.uri = ? AND {ACTIVE} AND {shown_rule('al')}",
        (p["uri"],))
    row = await cur.fetchone()
    if not row:
        raise not_found("NotFound", f"album {p['uri']} is not indexed")
    uri, did, cid, title, artwork, raw, indexed_at = row
    cur = await ctx.db.execute("SELECT track_uri FROM album_track WHERE album_uri = ? ORDER BY position", (uri,))
    track_uris = [r[0] for r in await cur.fetchall()]
    album: dict[str, Any] = {
        "uri": uri, "cid": cid, "artist": (await artist_views(ctx, [did]))[did], "title": title,
        "tracks": await ordered_track_views(ctx, track_uris), "record": json.loads(raw), "indexedAt": indexed_at}
    if artwork:
        album["artworkUrl"] = ctx.image_url(did, artwork)
    return {"album": album}


async def get_profile(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.actor.getProfile: profile fields plus counts. ``playsCount`` and ``likesCount``:
    the play and like records the account holds (``actor_count``, kept by the indexer).
    ``playsReceivedCount``: the plays of every track URI in the account's repo by listeners in
    standing (``indexer.standing``), from ``track_stats`` (which counts no one else)."""
    did = await resolve_actor(ctx, p["actor"])
    base = (await artist_views(ctx, [did]))[did]
    cur = await ctx.db.execute(
        "SELECT (SELECT COUNT(*) FROM track WHERE did = :d), (SELECT COUNT(*) FROM album WHERE did = :d), "
        "(SELECT COALESCE(MAX(plays), 0) FROM actor_count WHERE did = :d), "
        "(SELECT COALESCE(MAX(likes), 0) FROM actor_count WHERE did = :d), "
        "(SELECT COALESCE(SUM(plays), 0) FROM track_stats WHERE track_uri >= :lo AND track_uri < :hi)",
        {"d": did, "lo": f"at://{did}/", "hi": f"at://{did}0"})  # '0' follows '/'
    tracks, albums, plays, likes, received = await cur.fetchone()
    view: dict[str, Any] = {"did": did, "handle": base["handle"], "tracksCount": tracks, "albumsCount": albums,
                            "playsCount": plays, "likesCount": likes, "playsReceivedCount": received}
    cur = await ctx.db.execute(
        "SELECT p.display_name, p.description, p.location, p.avatar_cid, p.banner_cid, p.roles, p.links, r.json "
        "FROM profile p JOIN record r ON r.uri = p.uri WHERE p.did = ?", (did,))
    if row := await cur.fetchone():
        name, description, location, avatar, banner, roles, links, raw = row
        for k, v in (("displayName", name), ("description", description), ("location", location),
                     ("avatarUrl", ctx.image_url(did, avatar)), ("bannerUrl", ctx.image_url(did, banner))):
            if v:
                view[k] = v
        view["roles"] = json.loads(roles or "[]")
        view["links"] = json.loads(links or "[]")
        view["record"] = json.loads(raw)
    return view


async def get_plays(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.listen.getPlays: listening history, newest first by when listening began
    (``sort_at``, ties by URI): the account's plays, and its teal.fm plays (``teal_play``, each kept
    copy once, ``indexer.teal_play``) marked with ``origin`` and their fields in ``teal``, with
    ``listenedMs`` 0 (they carry no segments) and ``track`` when linked to one of ours."""
    did = await resolve_actor(ctx, p["actor"])
    args: list[Any] = [did]
    cond = tcond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = "AND (pl.sort_at < ? OR (pl.sort_at = ? AND pl.uri < ?))"
        tcond = "AND (tp.sort_at < ? OR (tp.sort_at = ? AND tp.uri < ?))"
        args += [after[0], after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT pl.uri, pl.cid, pl.track_uri, pl.created_at, pl.listened_ms, pl.completed, r.json, pl.sort_at "
        f"FROM play pl JOIN record r ON r.uri = pl.uri WHERE pl.did = ? {cond} "
        f"ORDER BY pl.sort_at DESC, pl.uri DESC LIMIT ?", [*args, p["limit"] + 1])
    rows: list[tuple[Any, ...]] = [(*r, None) for r in await cur.fetchall()]
    cur = await ctx.db.execute(
        f"SELECT tp.uri, tp.cid, tp.track_uri, tp.played_at, 0, 0, r.json, tp.sort_at, tp.collection, tp.track_name, "
        f"tp.artist_names, tp.release_name, tp.duration_s, tp.music_service, tp.client_agent "
        f"FROM teal_play tp JOIN record r ON r.uri = tp.uri WHERE tp.did = ? AND tp.duplicate = 0 {tcond} "
        f"ORDER BY tp.sort_at DESC, tp.uri DESC LIMIT ?", [*args, p["limit"] + 1])
    rows += [(*r[:8], r[8:]) for r in await cur.fetchall()]
    rows.sort(key=lambda r: (r[7], r[0]), reverse=True)
    page = rows[:p["limit"]]
    listener = (await artist_views(ctx, [did]))[did]
    tracks = await track_views(ctx, [r[2] for r in page if r[2]])
    plays = []
    for uri, cid, track_uri, created_at, listened, completed, raw, _, teal in page:
        record = json.loads(raw)
        view: dict[str, Any] = {"uri": uri, "cid": cid, "listener": listener, "createdAt": created_at,
                                "listenedMs": listened, "completed": bool(completed), "record": record}
        if track_uri:
            view["trackUri"] = track_uri
        if track_uri in tracks:
            view["track"] = tracks[track_uri]
        if teal:
            collection, name, artists, release, duration, service, agent = teal
            view["origin"] = collection
            fields: dict[str, Any] = {"trackName": name, "artistNames": json.loads(artists)}
            for key, value in (("releaseName", release), ("musicServiceUri", service),
                               ("submissionClientAgent", agent)):
                if isinstance(value, str):
                    fields[key] = value
            if isinstance(duration, int) and duration >= 0:
                fields["durationMs"] = duration * 1000
            if isinstance(record.get("playedTime"), str):
                fields["playedTime"] = created_at
            view["teal"] = fields
        plays.append(view)
    out: dict[str, Any] = {"plays": plays}
    if len(rows) > p["limit"]:
        last = page[-1]
        out["cursor"] = encode_cursor(last[7], last[0])
    return out


async def get_actor_likes(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.social.getActorLikes: the account's likes of indexed tracks of active artists (the
    join leaves out albums and tracks gone), newest first by ``min(createdAt, indexedAt)`` (a like
    cannot sort above real time by claiming a future date)."""
    did = await resolve_actor(ctx, p["actor"])
    args: list[Any] = [did]
    cond = ""
    if after := decode_cursor(p.get("cursor"), (str, str)):
        cond = "AND (MIN(l.created_at, l.indexed_at) < ? OR (MIN(l.created_at, l.indexed_at) = ? AND l.uri < ?))"
        args += [after[0], after[0], after[1]]
    cur = await ctx.db.execute(
        f"SELECT l.uri, l.cid, l.created_at, l.subject_uri, MIN(l.created_at, l.indexed_at) AS sort_at "
        f"FROM like_record l JOIN track t ON t.uri = l.subject_uri LEFT JOIN actor a ON a.did = t.did "
        f"WHERE l.did = ? AND {ACTIVE} {cond} "
        f"ORDER BY sort_at DESC, l.uri DESC LIMIT ?", [*args, p["limit"] + 1])
    rows = await cur.fetchall()
    page = rows[:p["limit"]]
    tracks = await track_views(ctx, [r[3] for r in page])
    likes = [{"uri": uri, "cid": cid, "createdAt": created_at, "track": tracks[subject]}
             for uri, cid, created_at, subject, _ in page if subject in tracks]
    out: dict[str, Any] = {"likes": likes}
    if len(rows) > p["limit"]:
        last = page[-1]
        out["cursor"] = encode_cursor(last[4], last[0])
    return out


async def get_track_stats(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.listen.getTrackStats: plays, streams paid and free (``indexer.streams``) with those
    of likely farms apart, the likes, the up and down votes (``vote_count``: each voter's latest vote,
    ``indexer.stats``; their weights: ``social.getVoteBreakdown``), and apart from all of these the
    teal.fm plays linked to the track (``tealPlays``, ``indexer.teal_play``). Every figure counts the
    listeners and voters in standing only (``indexer.standing``: a suspended or taken-down account's
    plays, likes and votes count for nothing while it is)."""
    _check_track_uri(p["uri"])
    cur = await ctx.db.execute(
        f"SELECT COALESCE(s.plays,0), COALESCE(s.listeners,0), COALESCE(s.listened_ms,0), "
        f"COALESCE(s.completions,0), COALESCE(s.likes,0), COALESCE(s.paid_streams,0), COALESCE(s.free_streams,0), "
        f"COALESCE(v.up,0), COALESCE(v.down,0) "
        f"FROM track t LEFT JOIN track_stats s ON s.track_uri = t.uri LEFT JOIN vote_count v ON v.subject = t.uri "
        f"LEFT JOIN actor a ON a.did = t.did WHERE t.uri = ? AND {ACTIVE} AND {shown_rule('t')}", (p["uri"],))
    row = await cur.fetchone()
    if not row:
        raise not_found("NotFound", f"track {p['uri']} is not indexed")
    plays, listeners, listened, completions, likes, paid, free, up, down = row
    # farms are few: from each, one seek into its streams of this track (a correlated count: as a
    # join, SQLite built a Bloom filter over the whole play table for every request, 27 ms at 100k)
    cur = await ctx.db.execute(
        "SELECT COALESCE(SUM((SELECT COUNT(*) FROM play p WHERE p.did = r.did AND p.track_uri = ? AND p.stream = 1)), 0) "
        f"FROM reputation r CROSS JOIN actor a ON a.did = r.did AND {IN_STANDING} WHERE r.farm = 1", (p["uri"],))
    (farm,) = await cur.fetchone()
    cur = await ctx.db.execute(  # teal.fm plays linked to it (indexer.teal_play), by accounts in standing, apart
        "SELECT COUNT(*) FROM teal_play tp LEFT JOIN actor a ON a.did = tp.did "
        f"WHERE tp.track_uri = ? AND tp.duplicate = 0 AND {IN_STANDING}", (p["uri"],))
    (teal,) = await cur.fetchone()
    return {"uri": p["uri"], "plays": plays, "uniqueListeners": listeners, "listenedMs": listened,
            "completions": completions, "likes": likes, "paidStreams": paid, "freeStreams": free,
            "votesUp": up, "votesDown": down, "farmStreams": farm, "tealPlays": teal}


QUERIES: dict[str, Handler] = {
    "fm.openmusic.catalog.getTrack": get_track,
    "fm.openmusic.catalog.getTracks": get_tracks,
    "fm.openmusic.catalog.searchTracks": search_tracks,
    "fm.openmusic.catalog.getArtistTracks": get_artist_tracks,
    "fm.openmusic.catalog.getAlbum": get_album,
    "fm.openmusic.actor.getProfile": get_profile,
    "fm.openmusic.listen.getPlays": get_plays,
    "fm.openmusic.listen.getTrackStats": get_track_stats,
    "fm.openmusic.social.getActorLikes": get_actor_likes,
    **SOCIAL_QUERIES,
    **CHART_QUERIES,
    **PLAYLIST_QUERIES,
    **RECOMMEND_QUERIES,
    **FEED_QUERIES,
    **REPUTATION_QUERIES,
}
