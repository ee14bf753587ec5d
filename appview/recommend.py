"""Recommendations (issue 13): "more like this" (``fm.openmusic.feed.getSimilarTracks``) and "for
you" (``fm.openmusic.feed.getSuggestions``, and ``for_you_uris`` for ``feed.getFeed``'s for-you feed).

**Model.** Item-to-item cosine similarity over co-listening, computed with ``scipy.sparse`` (no
linear algebra of our own): ``X`` is the listener x track matrix of the distinct (listener, track)
pairs with at least one stream (``play.stream = 1``), binary (one stream or fifty count the same:
repeat plays say more about one track than about taste across tracks). Only listeners in standing
(``indexer.standing``: active, not suspended or taken down by a label; as of the last build), only
indexed tracks of active artists, and never a listener's streams of their own tracks (an artist
playing their catalogue says nothing about what goes with what). The similarity of tracks i and j is
``|L(i) & L(j)| / sqrt(|L(i)| |L(j)|)`` (L: their listeners), computed block by block as rows of
``X^T X`` (each block bounded to about ``BLOCK_NNZ`` non-zeros, so memory stays flat however popular
a track is) and only each track's ``NEIGHBOURS`` most similar tracks are kept: a sparse track x track
matrix whose row is a track's neighbours in order. "More like this" is one row; "for you" sums the
rows of the listener's ``HISTORY`` most recently streamed distinct tracks (the more recent weighing
more, ``RECENCY``), drops what they already streamed (read from ``play`` at query time, so it is
exact even between rebuilds) and their own tracks, and takes the top k.

**Fallbacks.** A track with fewer co-listened neighbours than asked (new, or streamed by nobody
else) is topped up with the most streamed tracks sharing its genre (``track.genre_norm``) or moods
(``track_facet`` kind ``mood``, migration 0017): score 2 for the same genre + 1 per shared mood, then
popularity. A listener with no co-listened suggestion gets the same over the genres and moods of
what they played (streams or not) and liked (basis ``genre``); one with no plays at all gets the
most streamed tracks (basis ``popular``). Popularity is the number of distinct listeners who
streamed a track, in the model.

**Freshness.** The model is built in one pass over the index (the ``play`` rows of streams, read
through the partial index ``play_listener_track_streams``) in one read snapshot. The leading indexer
builds it (``keep_model``: again ``rest_after`` its build time, 60 x it, between 30 s and
``REBUILD_SECONDS``) and stores it for every replica (``store_model``: ``dumps``, plain arrays, no
pickle; ``appview.derived``, migration 0037). A process answering queries (``model``) reads the
stored one on first use and, while it holds a stored one, looks at the store again every
``STORE_CHECK_SECONDS``; while the store cannot serve (nothing stored yet, a leader quiet for longer
than ``store_max_age``, a broken blob) it builds its own as before, in a worker thread
(``asyncio.to_thread``) on its own read-only connection, and looks again ``rest_after`` its build
time later. One refresh at a time per
database; while it runs, queries use the previous model. Tracks of artists deactivated since the
build are dropped before an answer is returned (one indexed look-up), and hydration
(``appview.views.ordered_track_views``) drops them again.

**Cost.** A query is a row look-up and a top-k on arrays in memory plus one page's hydration: see
``bench/recs.py`` (p99 well under 50 ms at 100,000 tracks and 1,000,000 plays)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from appview import derived
from appview.views import ACTIVE, LISTED, ViewContext, ordered_track_views, resolve_actor, shown
from appview.xrpc import XrpcError, not_found
from core import db, periodic
from core.lexicons import TRACK, is_track_uri
from indexer.standing import OUT_OF_STANDING_SQL

Handler = Callable[[ViewContext, dict[str, Any]], Awaitable[dict[str, Any]]]
log = logging.getLogger(__name__)

#: Neighbours kept per track (the most similar).
NEIGHBOURS = 50
#: Most recently streamed distinct tracks of a listener that "for you" starts from.
HISTORY = 200
#: "For you" weighs the k-th most recently streamed of them (from 0) RECENCY ** k: what was heard
#: last says most about what comes next (``bench/recs.py``: hit rate 0.100 with 1.0, 0.105 with 0.95).
RECENCY = 0.95
#: Seconds a built model is used before the next query starts a rebuild (in the background).
REBUILD_SECONDS = 600.0
#: A model is rebuilt after ``max(MIN_REBUILD_SECONDS, REBUILD_FACTOR x its build time)``, at most
#: ``REBUILD_SECONDS``: a small catalog (a new network, the demo) sees new streams within a minute,
#: a large one rebuilds no more than about every 10 minutes.
MIN_REBUILD_SECONDS = 30.0
REBUILD_FACTOR = 60.0
#: Most tracks kept per genre and per mood for the fallbacks (the most streamed).
POOL = 500
#: Most popular tracks kept for the ``popular`` basis.
POPULAR = 1000
#: Upper bound of the non-zeros of one block of ``X^T X`` while building.
BLOCK_NNZ = 4_000_000
#: Similarity scores in the API are integers: cosine x this.
SCALE = 1000


@dataclass
class Model:
    """An item-item model built from the index (see the module docstring).

    ``uris[i]`` is track i's AT-URI (``index`` the inverse, in URI order); ``artists[i]`` its
    artist's DID; ``genre_of[i]`` the code of its normalised genre (-1: none; ``genre_codes``: name
    -> code); ``mood_matrix`` a tracks x moods 0/1 CSR matrix (``mood_codes``: name -> column).
    ``neighbours`` is a CSR
    ``float32`` tracks x tracks matrix: row i holds track i's at most ``NEIGHBOURS`` neighbours with
    their cosine similarity (0..1], most similar first. ``popularity[i]``: distinct listeners who
    streamed track i. ``popular`` (tracks someone streamed), ``by_genre[code]``, ``by_mood[code]``:
    track indexes, most streamed first (at most ``POOL`` each).
    ``listeners``, ``pairs``: the matrix's size; ``build_seconds``: how long the build took (s);
    ``built_at``: ``time.monotonic()`` at the end of the build (for a stored model: when this
    process last found it the newest in the store)."""

    uris: list[str]
    index: dict[str, int]
    artists: list[str]
    genre_codes: dict[str, int]
    genre_of: np.ndarray
    mood_codes: dict[str, int]
    mood_matrix: sp.csr_matrix
    neighbours: sp.csr_matrix
    popularity: np.ndarray
    popular: np.ndarray
    by_genre: list[np.ndarray]
    by_mood: list[np.ndarray]
    listeners: int = 0
    pairs: int = 0
    build_seconds: float = 0.0
    built_at: float = field(default_factory=time.monotonic)
    #: epoch seconds of the index snapshot it was built from (when the build began)
    as_of: float = field(default_factory=time.time)
    #: True for a model read from the leader's store (``keep_model``), False for one built here
    stored: bool = False

    def similar(self, uri: str) -> list[tuple[str, int]]:
        """The co-listened neighbours of the track ``uri``, most similar first, as (URI, cosine x
        ``SCALE``); [] for a track the model does not know."""
        i = self.index.get(uri)
        if i is None:
            return []
        lo, hi = self.neighbours.indptr[i], self.neighbours.indptr[i + 1]
        cols, sims = self.neighbours.indices[lo:hi], self.neighbours.data[lo:hi]
        return [(self.uris[j], max(1, round(float(s) * SCALE))) for j, s in zip(cols, sims, strict=True)]

    def for_listener(self, history: list[str], exclude: set[str], did: str, k: int) -> list[tuple[str, int]]:
        """The ``k`` tracks most similar to the tracks in ``history`` (AT-URIs, most recent first;
        the first ``HISTORY`` the model knows count, the k-th weighing ``RECENCY ** k``),
        similarities summed, leaving out ``exclude`` (AT-URIs) and the tracks of ``did``. Best
        first (ties: more listeners, then URI), as (URI, weighted sum of cosines x ``SCALE``)."""
        rows = [self.index[u] for u in history[:HISTORY] if u in self.index]
        if not rows:
            return []
        block = self.neighbours[rows]
        if block.nnz == 0:
            return []
        weights = np.repeat(RECENCY ** np.arange(len(rows)), np.diff(block.indptr)) * block.data
        scores = np.bincount(block.indices, weights=weights, minlength=len(self.uris))
        banned = [self.index[u] for u in exclude if u in self.index]
        scores[banned] = 0.0
        candidates = np.flatnonzero(scores > 0)
        want = k + 16  # room for the listener's own tracks
        if len(candidates) > want:
            candidates = candidates[np.argpartition(-scores[candidates], want - 1)[:want]]
        candidates = candidates[np.lexsort((candidates, -self.popularity[candidates], -scores[candidates]))]
        out = []
        for j in candidates:
            if self.artists[j] != did:
                out.append((self.uris[j], max(1, round(float(scores[j]) * SCALE))))
                if len(out) == k:
                    break
        return out

    def by_taste(self, genres: Counter[str], moods: Counter[str], exclude: set[str], did: str | None,
                 k: int) -> list[tuple[str, str, int]]:
        """Fallback: up to ``k`` of the most streamed tracks sharing a genre or mood with the seeds
        (``genres``, ``moods``: the seeds' genres and moods), scored 2 for a seed genre + 1 per
        seed mood, ties by popularity then URI; leaving out ``exclude`` and ``did``'s tracks.
        Returns (URI, reason ``genre``|``mood``, score)."""
        g_codes = [self.genre_codes[g] for g in genres if g in self.genre_codes]
        m_codes = [self.mood_codes[m] for m in moods if m in self.mood_codes]
        pools = [self.by_genre[c] for c in g_codes] + [self.by_mood[c] for c in m_codes]
        if not pools:
            return []
        candidates = np.unique(np.concatenate(pools))
        same_genre = np.isin(self.genre_of[candidates], g_codes)
        score = 2 * same_genre.astype(np.int64)
        if m_codes:
            score += np.asarray(self.mood_matrix[candidates][:, m_codes].sum(axis=1), dtype=np.int64).ravel()
        out = []
        for o in np.lexsort((candidates, -self.popularity[candidates], -score)):
            j = candidates[o]
            uri = self.uris[j]
            if uri in exclude or self.artists[j] == did:
                continue
            out.append((uri, "genre" if same_genre[o] else "mood", int(score[o])))
            if len(out) == k:
                break
        return out

    def most_popular(self, exclude: set[str], did: str | None, k: int) -> list[tuple[str, int]]:
        """The ``k`` tracks most listeners streamed, leaving out ``exclude`` and ``did``'s tracks:
        (URI, distinct listeners)."""
        out = []
        for j in self.popular:
            uri = self.uris[j]
            if uri not in exclude and self.artists[j] != did:
                out.append((uri, int(self.popularity[j])))
                if len(out) == k:
                    break
        return out


def item_neighbours(x: sp.csr_matrix, k: int = NEIGHBOURS, block_nnz: int = BLOCK_NNZ) -> sp.csr_matrix:
    """Each column's ``k`` most cosine-similar other columns of the binary listener x track matrix
    ``x`` (CSR, no duplicate entries): a CSR tracks x tracks ``float32`` matrix whose row i lists
    track i's neighbours most similar first (ties: lower index first), similarities in (0, 1].
    ``X^T X`` is computed ``block_nnz``-bounded row blocks at a time (scipy.sparse products)."""
    n_items = x.shape[1]
    x = x.astype(np.float32)
    xt = x.T.tocsr()
    norms = np.sqrt(np.diff(xt.indptr).astype(np.float64))
    degree = np.diff(x.indptr).astype(np.float64)
    work = xt @ degree  # an upper bound on the non-zeros of each row of X^T X
    counts = np.zeros(n_items, dtype=np.int64)
    indices, data = [], []
    cum = np.concatenate([[0.0], np.cumsum(work)])  # cum[i]: the work of the rows before i
    start = 0
    while start < n_items:
        end = max(start + 1, int(np.searchsorted(cum, cum[start] + block_nnz, side="right")) - 1)
        block = (xt[start:end] @ x).tocsr()
        bp, cols = block.indptr, block.indices
        rows = np.repeat(np.arange(start, end), np.diff(bp))
        sims = block.data.astype(np.float64) / (norms[rows] * norms[cols])
        sims[cols == rows] = 0.0  # a track is not its own neighbour
        for r in range(end - start):
            lo, hi = bp[r], bp[r + 1]
            if hi == lo:
                continue
            s, c = sims[lo:hi], cols[lo:hi]
            if hi - lo > k:  # the k-th largest, and every entry that ties with it
                keep = s >= np.partition(s, hi - lo - k)[hi - lo - k]
                s, c = s[keep], c[keep]
            order = np.lexsort((c, -s))[:k]
            order = order[s[order] > 0]
            counts[start + r] = len(order)
            indices.append(c[order].astype(np.int32))
            data.append(s[order].astype(np.float32))
        start = end
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((np.concatenate(data) if data else np.zeros(0, np.float32),
                          np.concatenate(indices) if indices else np.zeros(0, np.int32), indptr),
                         shape=(n_items, n_items))


def build_model(tracks: Iterable[tuple[str, str, str | None]], moods: Iterable[tuple[str, str]],
                pairs: Iterable[tuple[str, str]], inactive: set[str] = frozenset(), k: int = NEIGHBOURS) -> Model:
    """A ``Model`` from ``tracks`` ((AT-URI, artist DID, normalised genre or None): the indexed
    tracks of active artists), their ``moods`` ((AT-URI, mood)) and the distinct streamed
    ``pairs`` ((listener DID, track AT-URI), each once). Pairs of ``inactive`` listeners (out of
    standing: ``INACTIVE_SQL``), of tracks not in ``tracks`` and of a listener with their own track
    are left out."""
    started = time.perf_counter()
    uris, artists, genres = [], [], []
    for uri, did, genre in tracks:
        uris.append(uri)
        artists.append(did)
        genres.append(genre or None)
    index = {u: i for i, u in enumerate(uris)}
    track_moods: list[list[str]] = [[] for _ in uris]
    for uri, mood in moods:
        if (i := index.get(uri)) is not None:
            track_moods[i].append(mood)
    listeners: dict[str, int] = {}
    rows, cols = [], []
    for did, uri in pairs:
        j = index.get(uri)
        if j is None or did in inactive or artists[j] == did:
            continue
        rows.append(listeners.setdefault(did, len(listeners)))
        cols.append(j)
    n = len(uris)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (np.array(rows, np.int64), np.array(cols, np.int64))),
                      shape=(len(listeners), n))
    x.sum_duplicates()
    x.data[:] = 1.0
    popularity = np.diff(x.tocsc().indptr).astype(np.int64)
    order = np.lexsort((np.arange(n), -popularity))  # most streamed first, then older index
    genre_codes: dict[str, int] = {}
    genre_of = np.array([-1 if g is None else genre_codes.setdefault(g, len(genre_codes)) for g in genres], np.int64)
    mood_codes: dict[str, int] = {}
    mood_rows, mood_cols = [], []
    for i, names in enumerate(track_moods):
        for name in dict.fromkeys(names):
            mood_rows.append(i)
            mood_cols.append(mood_codes.setdefault(name, len(mood_codes)))
    mood_matrix = sp.csr_matrix((np.ones(len(mood_rows), np.int64), (mood_rows, mood_cols)),
                                shape=(n, len(mood_codes)))
    by_genre: list[list[int]] = [[] for _ in genre_codes]
    by_mood: list[list[int]] = [[] for _ in mood_codes]
    for j in order:
        if (g := genre_of[j]) >= 0 and len(by_genre[g]) < POOL:
            by_genre[g].append(j)
        for c in mood_matrix.indices[mood_matrix.indptr[j]:mood_matrix.indptr[j + 1]]:
            if len(by_mood[c]) < POOL:
                by_mood[c].append(j)
    return Model(uris=uris, index=index, artists=artists, genre_codes=genre_codes, genre_of=genre_of,
                 mood_codes=mood_codes, mood_matrix=mood_matrix, neighbours=item_neighbours(x, k),
                 popularity=popularity, popular=order[popularity[order] > 0][:POPULAR],
                 by_genre=[np.array(v, np.int64) for v in by_genre],
                 by_mood=[np.array(v, np.int64) for v in by_mood],
                 listeners=len(listeners), pairs=int(x.nnz), build_seconds=time.perf_counter() - started)


TRACKS_SQL = (f"SELECT t.uri, t.did, t.genre_norm FROM track t LEFT JOIN actor a ON a.did = t.did WHERE {ACTIVE} "
              f"ORDER BY t.uri")
MOODS_SQL = "SELECT track_uri, value FROM track_facet WHERE kind = 'mood'"
PAIRS_SQL = "SELECT did, track_uri FROM play WHERE stream = 1 GROUP BY did, track_uri"
#: Listeners whose streams the model leaves out: those out of standing (``indexer.standing``).
INACTIVE_SQL = OUT_OF_STANDING_SQL


def load_model(path: str) -> Model:
    """Build a ``Model`` from the index at ``path`` (SQLite file), read on its own read-only
    connection in one pass, in one read transaction (blocking: call it in a worker thread).
    Raises sqlite3 errors."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        return read_model(conn)
    finally:
        conn.close()


def read_model(conn: Any, postgres: bool = False) -> Model:
    """Build a ``Model`` reading ``conn`` (a ``sqlite3`` connection in autocommit mode, or
    ``core.pg.SyncConnection``) in one read transaction: one snapshot (SQLite's WAL; PostgreSQL's
    ``REPEATABLE READ``) while writers go on. Blocking. Raises the database's errors."""
    started, began = time.perf_counter(), time.time()
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if postgres else "BEGIN")
    ok = False
    try:
        inactive = {did for (did,) in conn.execute(INACTIVE_SQL).fetchall()}
        tracks = conn.execute(TRACKS_SQL).fetchall()
        moods = conn.execute(MOODS_SQL).fetchall()
        cur = conn.execute(PAIRS_SQL)

        def pairs() -> Iterable[tuple[str, str]]:
            while chunk := cur.fetchmany(10_000):
                yield from chunk

        model = build_model(tracks, moods, pairs(), inactive)
        ok = True
    finally:
        if ok:
            conn.execute("COMMIT")
        else:  # never hide the error behind a failed ROLLBACK
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
    model.build_seconds = time.perf_counter() - started
    model.as_of = began
    return model


async def _build(ctx: ViewContext) -> Model:
    """Build the model for ``ctx.db``: in a worker thread on the database file, or (an in-memory
    database, PostgreSQL) from rows read through ``ctx.db``, the arithmetic still in a worker thread."""
    cur = await ctx.db.execute("PRAGMA database_list")
    path = next((row[2] for row in await cur.fetchall() if row[1] == "main"), "")
    if path:
        return await asyncio.to_thread(load_model, path)
    began = time.time()
    rows = {}
    for name, sql in (("inactive", INACTIVE_SQL), ("tracks", TRACKS_SQL), ("moods", MOODS_SQL), ("pairs", PAIRS_SQL)):
        cur = await ctx.db.execute(sql)
        rows[name] = await cur.fetchall()
    m = await asyncio.to_thread(build_model, rows["tracks"], rows["moods"], rows["pairs"],
                                {r[0] for r in rows["inactive"]})
    m.as_of = began
    return m


# -- the model shared by the leader (issue 15) ---------------------------------------------------

#: The name of the stored model in ``derived_blob`` / ``derived_state`` (``appview.derived``).
STORE_NAME = "recommend"
#: Seconds between a replica's looks at the store once its stored model is due (one look-up each).
STORE_CHECK_SECONDS = 30.0
#: A stored model older than this (seconds) is not used: the leader is gone (a replica builds its own).
STORE_MIN_MAX_AGE = 300.0


def rest_after(build_seconds: float) -> float:
    """Seconds a model built in ``build_seconds`` is used before the next build: 60 x its build
    time, between ``MIN_REBUILD_SECONDS`` and ``REBUILD_SECONDS``."""
    return min(REBUILD_SECONDS, max(MIN_REBUILD_SECONDS, REBUILD_FACTOR * build_seconds))


def store_max_age(build_seconds: float) -> float:
    """Seconds a stored model built in ``build_seconds`` may be old before replicas stop trusting
    the leader to replace it: three of the leader's rounds (build + ``rest_after``), at least
    ``STORE_MIN_MAX_AGE``."""
    return max(STORE_MIN_MAX_AGE, 3 * (build_seconds + rest_after(build_seconds)))


def _strings(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``values`` as their UTF-8 bytes end to end and the offsets of each (any character allowed)."""
    encoded = [v.encode() for v in values]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded], dtype=np.int64)])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unstrings(raw: np.ndarray, offsets: np.ndarray) -> list[str]:
    data = raw.tobytes()
    bounds = offsets.tolist()
    return [data[lo:hi].decode() for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _ragged(lists: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in lists], dtype=np.int64)])
    return (np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)), offsets


def dumps(m: Model) -> bytes:
    """``m`` as bytes: an ``.npz`` archive of plain arrays (``numpy.savez_compressed``; no pickle,
    so ``loads`` never runs code from the database). Strings (track URIs, DIDs, genre and mood
    names) are stored as UTF-8 bytes with their offsets."""
    by_genre, genre_offsets = _ragged(m.by_genre)
    by_mood, mood_offsets = _ragged(m.by_mood)
    strings = {"uris": m.uris, "artists": m.artists,
               "genres": sorted(m.genre_codes, key=m.genre_codes.__getitem__),
               "moods": sorted(m.mood_codes, key=m.mood_codes.__getitem__)}
    arrays = {}
    for name, values in strings.items():
        arrays[name], arrays[f"{name}_offsets"] = _strings(values)
    out = io.BytesIO()
    np.savez_compressed(
        out, **arrays, genre_of=m.genre_of,
        mood_data=m.mood_matrix.data, mood_indices=m.mood_matrix.indices, mood_indptr=m.mood_matrix.indptr,
        mood_shape=np.array(m.mood_matrix.shape, np.int64),
        nb_data=m.neighbours.data, nb_indices=m.neighbours.indices, nb_indptr=m.neighbours.indptr,
        popularity=m.popularity, popular=m.popular, by_genre=by_genre, genre_offsets=genre_offsets,
        by_mood=by_mood, mood_offsets=mood_offsets,
        sizes=np.array([m.listeners, m.pairs], np.int64), times=np.array([m.build_seconds, m.as_of], np.float64))
    return out.getvalue()


def loads(data: bytes) -> Model:
    """The ``Model`` that ``dumps`` wrote (``stored`` set). Raises ``ValueError`` (or numpy's and
    zipfile's errors) on bytes that are not such an archive."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    uris = _unstrings(a["uris"], a["uris_offsets"])
    n = len(uris)
    genres, moods = _unstrings(a["genres"], a["genres_offsets"]), _unstrings(a["moods"], a["moods_offsets"])
    return Model(
        uris=uris, index={u: i for i, u in enumerate(uris)}, artists=_unstrings(a["artists"], a["artists_offsets"]),
        genre_codes={g: i for i, g in enumerate(genres)}, genre_of=a["genre_of"],
        mood_codes={m: i for i, m in enumerate(moods)},
        mood_matrix=sp.csr_matrix((a["mood_data"], a["mood_indices"], a["mood_indptr"]),
                                  shape=tuple(int(v) for v in a["mood_shape"])),
        neighbours=sp.csr_matrix((a["nb_data"], a["nb_indices"], a["nb_indptr"]), shape=(n, n)),
        popularity=a["popularity"], popular=a["popular"],
        by_genre=[a["by_genre"][lo:hi] for lo, hi in zip(a["genre_offsets"][:-1], a["genre_offsets"][1:], strict=True)],
        by_mood=[a["by_mood"][lo:hi] for lo, hi in zip(a["mood_offsets"][:-1], a["mood_offsets"][1:], strict=True)],
        listeners=int(a["sizes"][0]), pairs=int(a["sizes"][1]), build_seconds=float(a["times"][0]),
        as_of=float(a["times"][1]), stored=True)


def store_model(database: str, fence: Callable[[Any], None] | None = None) -> dict[str, float]:
    """Build the model from ``database`` (a SQLite path or PostgreSQL URL) and store it for every
    replica (``appview.derived.write_blob``, name ``STORE_NAME``; ``fence``: the leader's commit
    fence, run before COMMIT). Blocking: the leader calls it in a worker thread (``keep_model``). Returns ``{"build_seconds", "store_seconds", "bytes", "tracks",
    "pairs"}``. Raises the database's errors."""
    conn = db.connect_sync(database)
    try:
        m = read_model(conn, db.is_postgres(database))
    finally:
        conn.close()
    started = time.perf_counter()
    data = dumps(m)
    day = datetime.fromtimestamp(m.as_of, UTC).date().isoformat()
    derived.write_blob(database, STORE_NAME, data, derived.Stamp(day, m.as_of, m.build_seconds), fence)
    return {"build_seconds": m.build_seconds, "store_seconds": time.perf_counter() - started,
            "bytes": len(data), "tracks": len(m.uris), "pairs": m.pairs}


async def keep_model(database: str, fence: Callable[[Any], None] | None = None) -> None:
    """``store_model`` now, then again ``rest_after`` its build time later, until cancelled (the
    leader runs it, with its commit ``fence``: replicas then read the stored model instead of each
    building one). A failure is logged, not raised; the next try is ``MIN_REBUILD_SECONDS`` later."""
    async def work() -> float:
        done = await asyncio.to_thread(store_model, database, fence)
        rest = rest_after(done["build_seconds"])
        log.info("recommendation model stored: %d tracks, %d pairs, built in %.1fs, %.1f MB written in %.1fs; "
                 "next in %.0fs", done["tracks"], done["pairs"], done["build_seconds"], done["bytes"] / 1e6,
                 done["store_seconds"], rest)
        return rest
    await periodic.repeat("storing the recommendation model", work, lambda rest: rest, MIN_REBUILD_SECONDS, log)


async def _from_store(ctx: ViewContext, current: Model | None) -> Model | None:
    """The leader's stored model when it is fresh (younger than ``store_max_age``), began after
    the last ``clear_models``, and is another than ``current`` (a stored one: any other stamp, the
    store being the only source; one built here: a later one). ``current`` itself (marked checked)
    when the store still holds it. None when the store cannot serve (nothing stored, a leader gone
    quiet, a blob replaced twice while read, or ours built later): then the caller builds its own."""
    for _attempt in range(2):  # a blob replaced while read: its successor, once
        stamp = await derived.stamp_of(ctx.db, STORE_NAME)
        if (stamp is None or time.time() - stamp.computed_at > store_max_age(stamp.seconds)
                or stamp.computed_at < _cleared_at):
            return None
        if current is not None and current.stored and stamp.computed_at == current.as_of:
            current.built_at = time.monotonic()
            return current
        if current is not None and not current.stored and stamp.computed_at <= current.as_of:
            return None  # ours is newer than the leader's: build again as before
        data = await derived.read_blob(ctx.db, STORE_NAME, stamp)
        if data is not None:
            break
    else:
        return current if current is not None and current.stored else None
    started = time.perf_counter()
    m = await asyncio.to_thread(loads, data)
    m.as_of = stamp.computed_at  # what the store says of it, compared with the next stamp
    log.info("recommendation model read from the store: %d tracks, %.1f MB, loaded in %.1fs, built %.0fs ago",
             len(m.uris), len(data) / 1e6, time.perf_counter() - started, time.time() - m.as_of)
    return m


async def _refresh(ctx: ViewContext, current: Model | None) -> Model:
    """The next model for ``ctx.db``: the leader's stored one when it can serve (``_from_store``),
    else one built here (``_build``)."""
    try:
        stored = await _from_store(ctx, current)
    except Exception as exc:  # a store that cannot be read (a broken blob): build as before
        log.warning("cannot read the stored recommendation model: %r", exc)
        stored = None
    if stored is not None:
        return stored
    m = await _build(ctx)
    log.info("recommendation model built here: %d tracks, %d pairs, in %.1fs", len(m.uris), m.pairs, m.build_seconds)
    return m


_models: dict[int, Model] = {}
_builds: dict[int, asyncio.Task] = {}
#: Bumped by ``clear_models``: a build started before it is never installed.
_generation = 0
#: Epoch seconds of the last ``clear_models``: stored models older than this are not used.
_cleared_at = 0.0


def clear_models() -> None:
    """Forget every built model (tests; after bulk changes): the next query builds afresh (a stored
    model counts only if the leader's build of it began after this call), and a build already
    running is not installed when it ends."""
    global _generation, _cleared_at
    _generation += 1
    _cleared_at = time.time()
    _models.clear()
    _builds.clear()


def _finished(key: int, task: asyncio.Task, generation: int) -> None:
    if _builds.get(key) is task:
        del _builds[key]
    if task.cancelled() or generation != _generation:
        return
    if (exc := task.exception()) is not None:
        log.error("recommendation model build failed: %r", exc)
        return
    _models[key] = task.result()


def rebuild_after(m: Model) -> float:
    """Seconds after which ``m`` is replaced: for a model built here ``rest_after`` its build time;
    for a stored one ``STORE_CHECK_SECONDS`` (a look at the store)."""
    return STORE_CHECK_SECONDS if m.stored else rest_after(m.build_seconds)


async def model(ctx: ViewContext) -> Model:
    """The model for ``ctx.db``: on first use the leader's stored one, or one built here when the
    store cannot serve (the caller waits); then replaced in the background once older than
    ``rebuild_after`` it (callers meanwhile get the previous one). One refresh at a time per
    database. Raises what the first build raises (the database's errors)."""
    key = id(ctx.db)
    current = _models.get(key)
    if current is not None and time.monotonic() - current.built_at < rebuild_after(current):
        return current
    task = _builds.get(key)
    if task is None:
        task = asyncio.get_running_loop().create_task(_refresh(ctx, current))
        _builds[key] = task
        task.add_done_callback(lambda t, g=_generation: _finished(key, t, g))
    if current is not None:
        return current
    return await asyncio.shield(task)


# -- skeletons: (URI, reason, score) -------------------------------------------------------------

async def _active(ctx: ViewContext, uris: list[str]) -> set[str]:
    """Those of ``uris`` that are indexed tracks of active artists."""
    if not uris:
        return set()
    marks = ",".join("?" * len(uris))
    cur = await ctx.db.execute(f"SELECT t.uri FROM track t LEFT JOIN actor a ON a.did = t.did "
                               f"WHERE t.uri IN ({marks}) AND {LISTED}", uris)
    return {uri for (uri,) in await cur.fetchall()}


async def _keep(ctx: ViewContext, items: list[tuple[str, str, int]], limit: int) -> list[tuple[str, str, int]]:
    """``items`` without repeats and without tracks that are gone or whose artist is not active, cut to ``limit``."""
    seen: set[str] = set()
    unique = [it for it in items if not (it[0] in seen or seen.add(it[0]))]
    alive = await _active(ctx, [uri for uri, _, _ in unique])
    return [it for it in unique if it[0] in alive][:limit]


async def _track_taste(ctx: ViewContext, uri: str) -> tuple[str, Counter[str], Counter[str]]:
    """The artist DID, genre and moods of an indexed track of an active artist. Raises ``XrpcError`` NotFound."""
    if not is_track_uri(uri):
        raise not_found("NotFound", f"{uri} is not a {TRACK} AT-URI")
    cur = await ctx.db.execute(f"SELECT t.did, t.genre_norm FROM track t LEFT JOIN actor a ON a.did = t.did "
                               f"WHERE t.uri = ? AND {ACTIVE} AND {shown('t')}", (uri,))
    row = await cur.fetchone()
    if row is None:
        raise not_found("NotFound", f"track {uri} is not indexed")
    cur = await ctx.db.execute("SELECT value FROM track_facet WHERE track_uri = ? AND kind = 'mood'", (uri,))
    moods = Counter(m for (m,) in await cur.fetchall())
    return row[0], Counter([row[1]] if row[1] else []), moods


async def similar_tracks(ctx: ViewContext, uri: str, limit: int) -> list[tuple[str, str, int]]:
    """"More like this" skeleton for the track ``uri``: up to ``limit`` (URI, reason, score), co-listened
    neighbours first, then the genre/mood fallback. Raises ``XrpcError`` NotFound for a track
    that is not indexed or whose artist is not active."""
    _artist, genres, moods = await _track_taste(ctx, uri)
    m = await model(ctx)
    want = limit + 10  # room for tracks whose artist was deactivated since the build
    items = [(u, "colistening", s) for u, s in m.similar(uri)[:want]]
    if len(items) < limit:
        items += m.by_taste(genres, moods, {uri, *(u for u, _, _ in items)}, None, want - len(items))
    return await _keep(ctx, [it for it in items if it[0] != uri], limit)


async def _history(ctx: ViewContext, did: str) -> tuple[list[str], set[str]]:
    """``did``'s streamed tracks (AT-URIs), most recently streamed first (ties by URI), and the same as a set."""
    cur = await ctx.db.execute("SELECT track_uri, MAX(sort_at) AS last FROM play WHERE did = ? AND stream = 1 "
                               "GROUP BY track_uri ORDER BY last DESC, track_uri", (did,))
    streamed = [uri for uri, _ in await cur.fetchall()]
    return streamed, set(streamed)


async def _taste(ctx: ViewContext, did: str) -> tuple[Counter[str], Counter[str]]:
    """Genres and moods of the tracks ``did`` played (streams or not) or liked, with how often."""
    seeds = ("SELECT track_uri AS uri FROM play WHERE did = ? UNION ALL "
             "SELECT subject_uri FROM like_record WHERE did = ?")
    cur = await ctx.db.execute(f"SELECT t.genre_norm FROM ({seeds}) s JOIN track t ON t.uri = s.uri "
                               f"WHERE t.genre_norm IS NOT NULL", (did, did))
    genres = Counter(g for (g,) in await cur.fetchall())
    cur = await ctx.db.execute(f"SELECT f.value FROM ({seeds}) s JOIN track_facet f ON f.track_uri = s.uri "
                               f"AND f.kind = 'mood'", (did, did))
    moods = Counter(m for (m,) in await cur.fetchall())
    return genres, moods


async def suggestions(ctx: ViewContext, did: str, limit: int) -> tuple[str, list[tuple[str, str, int]]]:
    """"For you" skeleton for the listener ``did``: (basis, up to ``limit`` (URI, reason, score)),
    never a track they streamed nor one of their own. basis ``colistening`` when co-listening gives
    at least one track (topped up from the genre fallback, then popularity), else ``genre`` when
    they played or liked tracks with a genre or mood, else ``popular``."""
    m = await model(ctx)
    history, streamed = await _history(ctx, did)
    want = limit + 10
    items = [(u, "colistening", s) for u, s in m.for_listener(history, streamed, did, want)]
    basis = "colistening" if items else None
    if len(items) < want:
        genres, moods = await _taste(ctx, did)
        taste = m.by_taste(genres, moods, streamed | {u for u, _, _ in items}, did, want - len(items))
        basis = basis or ("genre" if taste else None)
        items += taste
    if len(items) < want:
        items += [(u, "popular", s) for u, s in m.most_popular(streamed | {u for u, _, _ in items}, did,
                                                                 want - len(items))]
    kept = await _keep(ctx, items, limit)
    return basis or "popular", kept


async def for_you_uris(ctx: ViewContext, did: str, limit: int) -> list[str]:
    """The AT-URIs of up to ``limit`` tracks suggested for the listener ``did`` (a DID; one this
    index does not know gets the most streamed tracks), best first, as ``getSuggestions`` ranks
    them: for ``fm.openmusic.feed.getFeed``'s for-you feed. Never raises for an unknown DID."""
    _basis, items = await suggestions(ctx, did, limit)
    return [uri for uri, _, _ in items]


async def _present(ctx: ViewContext, items: list[tuple[str, str, int]]) -> list[dict[str, Any]]:
    views = await ordered_track_views(ctx, [uri for uri, _, _ in items])
    extra = {uri: (reason, score) for uri, reason, score in items}
    return [{**v, "reason": extra[v["uri"]][0], "score": extra[v["uri"]][1]} for v in views]


async def get_similar_tracks(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.feed.getSimilarTracks: ``{uri, tracks: [recommendedTrackView]}``. Raises
    ``XrpcError`` NotFound for a track not indexed or of an inactive artist."""
    items = await similar_tracks(ctx, p["uri"], p["limit"])
    return {"uri": p["uri"], "tracks": await _present(ctx, items)}


async def get_suggestions(ctx: ViewContext, p: dict[str, Any]) -> dict[str, Any]:
    """fm.openmusic.feed.getSuggestions: ``{actor (DID), basis, tracks: [recommendedTrackView]}``.
    A DID this index has never seen is a new listener (basis ``popular``). Raises ``XrpcError``
    ActorNotFound for a handle that does not resolve or an account known not to be active."""
    actor = p["actor"]
    try:
        did = await resolve_actor(ctx, actor)
    except XrpcError:
        if not actor.startswith("did:"):
            raise
        cur = await ctx.db.execute("SELECT 1 FROM actor WHERE did = ?", (actor,))
        if await cur.fetchone():
            raise  # known, and not active
        did = actor
    basis, items = await suggestions(ctx, did, p["limit"])
    return {"actor": did, "basis": basis, "tracks": await _present(ctx, items)}


RECOMMEND_QUERIES: dict[str, Handler] = {
    "fm.openmusic.feed.getSimilarTracks": get_similar_tracks,
    "fm.openmusic.feed.getSuggestions": get_suggestions,
}
