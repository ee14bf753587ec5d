"""A realistic synthetic catalog and listening log, written through the indexer's own batch path
(issue 15, "Measured").

``Workload(spec)`` generates, deterministically from ``spec.seed`` and ``spec.base`` (a UTC day),
the firehose commit events an AppView would see: artists' profiles, albums and tracks (with
``album`` references, genres, AI disclosure), then the listeners' activity — plays in listening
sessions (consecutive plays by one listener, the next track of the album or a jump to another one),
with Zipf popularity over the tracks, ``listenedMs``, ``completed`` and ``segments`` (pauses, skips
and seeks back, as ``fm.openmusic.listen.play`` allows), likes, follows (the "subscriptions" of the
social graph) and tips. Each record is its own ``#commit`` (one op, ``rev`` increasing per repo,
``since`` the previous rev), as the PDS emits them. Paid subscriptions
(``fm.openmusic.payment.subscription`` is not indexed: the broker records the Stripe invoice) are
``subscription_invoice`` rows written before the plays, as ``payments.subscriptions.record_invoice``
writes a paid invoice (without its ledger posting), so a share of the streams is decided paid.

``ingest(target, workload)`` applies the events with ``Indexer.apply(events, cursor,
prepared=True)``: the same transaction per batch, record validation, indexing, stream decisions,
stats and rollups as the live consumer; no commit signature or MST verification (``prepared``: the
generated commits carry none), so what is timed is the indexer's work: Python validation and
indexing plus the database writes. Event generation is timed apart and not counted.

Dates: tracks are created 30 days before ``base``, plays fall in the 6 days before it, so with
``base`` = today (UTC) every play is dated honestly (``indexer.streams``) and can be a stream.

    python -m bench.generator --engine sqlite|postgresql [--tracks 10000 --plays 100000] [--batch 500]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import itertools
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cbrrr
import libipld

from core.lexicons import ALBUM, FOLLOW, LIKE, PLAY, PROFILE, TIP, TRACK
from firehose.events import CommitEvent, Event, RecordOp

WORDS = ("neon harbor midnight glass lantern coast loop blue kettle rainy tuesday walking bass late set boss "
         "level save point extra life credits roll river echo velvet static ember orbit silver northern").split()
GENRES = ["Jazz", "Rock", "Ambient", "Synthwave", "Chiptune", "Folk", "Techno", "Classical", "Hip Hop", "Soul"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "BR", "JP", "MX", "CA", "SE"]
AI_LEVELS = ["human", "human", "human", "assisted", "generated"]
_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"


def tid(n: int) -> str:
    """A valid record key (TID syntax) for the number ``n``: increasing with ``n``."""
    s = ""
    for _ in range(11):
        s = _ALPHABET[n % 32] + s
        n //= 32
    return "3k" + s


def cid_for(kind: bytes, n: int) -> str:
    """A deterministic CIDv1 (dag-cbor, sha2-256) string for the ``n``-th record of ``kind``."""
    return libipld.encode_cid(b"\x01\x71\x12\x20" + hashlib.sha256(kind + n.to_bytes(8, "big")).digest())


def blob_ref(n: int) -> cbrrr.CID:
    """A raw-codec blob CID, as the firehose decoder gives blob refs (``cbrrr.CID``)."""
    return cbrrr.CID(b"\x01\x55\x12\x20" + hashlib.sha256(b"blob" + n.to_bytes(8, "big")).digest())


def iso(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (atproto datetime)."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def today_utc() -> datetime:
    """Today 00:00 UTC: the default ``Spec.base``."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


@dataclass
class Spec:
    """Sizes of a workload. ``artists``/``listeners``/``albums`` default from ``tracks``/``plays``;
    ``likes``, ``tips``, ``follows`` are counts of records; ``paid_share`` of listeners hold a paid
    tier; ``zipf_s`` is the popularity exponent over tracks (rank r weighs 1 / r**s)."""

    tracks: int = 10_000
    plays: int = 100_000
    artists: int = 0
    listeners: int = 0
    tracks_per_album: int = 10
    likes: int = -1
    tips: int = -1
    follows: int = -1
    paid_share: float = 0.25
    zipf_s: float = 1.0
    seed: int = 1
    base: datetime = field(default_factory=today_utc)

    def __post_init__(self) -> None:
        self.artists = self.artists or max(1, self.tracks // 20)
        self.listeners = self.listeners or max(10, self.plays // 100)
        self.likes = self.plays // 20 if self.likes < 0 else self.likes
        self.tips = self.plays // 2000 if self.tips < 0 else self.tips
        self.follows = self.listeners * 3 if self.follows < 0 else self.follows


def artist_did(i: int) -> str:
    return f"did:plc:artist{i:018d}"


def listener_did(i: int) -> str:
    return f"did:plc:listener{i:016d}"


class Workload:
    """The events of one ``Spec`` (see the module docstring), generated lazily in firehose order:
    ``catalog()`` then ``activity()``; ``events()`` is both. Also ``invoices()``: the paid
    subscription rows. Deterministic: the same spec gives the same events, record for record."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.seq = 0
        self.revs: dict[str, int] = {}
        rng = random.Random(spec.seed)
        t = spec.tracks
        # track i: by artist i % artists; album i // tracks_per_album; duration 2-7 min
        self.durations = [rng.randrange(120_000, 420_000, 1000) for _ in range(t)]
        # popularity rank r -> a track scattered over the catalog (a multiplier coprime with t)
        step = next(p for p in itertools.count(7919) if _coprime(p, t))
        self.by_rank = [(r * step) % t for r in range(t)]
        self.cum = list(itertools.accumulate(1.0 / (r + 1) ** spec.zipf_s for r in range(t)))
        self.paid = sorted(rng.sample(range(spec.listeners), int(spec.listeners * spec.paid_share)))

    # -- identifiers -------------------------------------------------------------------------

    def artist_of(self, i: int) -> int:
        """The artist of track ``i``: the one of its album (album ``a`` is artist ``a % artists``'s)."""
        return (i // self.spec.tracks_per_album) % self.spec.artists

    def track_uri(self, i: int) -> str:
        return f"at://{artist_did(self.artist_of(i))}/{TRACK}/{tid(i)}"

    def album_index(self, i: int) -> int:
        return i // self.spec.tracks_per_album

    def album_uri(self, a: int) -> str:
        return f"at://{artist_did(a % self.spec.artists)}/{ALBUM}/{tid(a)}"

    def _commit(self, did: str, collection: str, rkey: str, record: dict[str, Any], kind: bytes) -> CommitEvent:
        self.seq += 1
        n = self.revs.get(did, 0) + 1
        since = tid(n - 1) if n > 1 else None
        self.revs[did] = n
        op = RecordOp("create", collection, rkey, cid_for(kind, self.seq), record)
        return CommitEvent(seq=self.seq, did=did, rev=tid(n), since=since, commit=cid_for(b"commit", self.seq),
                           time="", ops=[op])

    def album_seq(self, a: int) -> int:
        """The seq of album ``a``'s commit (after the profiles, and its own tracks)."""
        s = self.spec
        return s.artists + min(s.tracks, (a + 1) * s.tracks_per_album) + a + 1

    # -- catalog ------------------------------------------------------------------------------

    def catalog(self) -> Iterator[CommitEvent]:
        """Profiles of the artists, then per album its tracks and the album record."""
        s = self.spec
        rng = random.Random(s.seed * 7 + 1)
        created = s.base - timedelta(days=30)
        for a in range(s.artists):
            yield self._commit(artist_did(a), PROFILE, "self", {
                "$type": PROFILE, "displayName": f"Artist {a} {rng.choice(WORDS).title()}", "roles": ["artist"],
                "createdAt": iso(created)}, b"profile")
        albums = -(-s.tracks // s.tracks_per_album)
        for a in range(albums):
            when = iso(created + timedelta(seconds=a))
            genre = rng.choice(GENRES)
            refs = []
            for i in range(a * s.tracks_per_album, min(s.tracks, (a + 1) * s.tracks_per_album)):
                did = artist_did(a % s.artists)
                title = " ".join(rng.choice(WORDS).title() for _ in range(2)) + f" {i}"
                rec = {"$type": TRACK, "title": title, "duration": self.durations[i], "genre": genre,
                       "audio": {"$type": "blob", "ref": blob_ref(i), "mimeType": "audio/mpeg", "size": 4_000_000},
                       "album": {"uri": self.album_uri(a), "cid": cid_for(b"album", self.album_seq(a))},
                       "trackNumber": i - a * s.tracks_per_album + 1,
                       "aiDisclosure": {"level": rng.choice(AI_LEVELS)}, "createdAt": when}
                if rng.random() < 0.3:
                    rec["tags"] = [rng.choice(WORDS), rng.choice(WORDS)]
                evt = self._commit(did, TRACK, tid(i), rec, b"track")
                refs.append({"uri": self.track_uri(i), "cid": evt.ops[0].cid})
                yield evt
            yield self._commit(artist_did(a % s.artists), ALBUM, tid(a), {
                "$type": ALBUM, "title": f"{rng.choice(WORDS).title()} {a}", "genre": genre, "tracks": refs,
                "createdAt": when}, b"album")

    # -- activity -----------------------------------------------------------------------------

    def zipf_track(self, rng: random.Random) -> int:
        """A track drawn by popularity (Zipf over ranks)."""
        return self.by_rank[bisect.bisect_left(self.cum, rng.random() * self.cum[-1])]

    def play_record(self, rng: random.Random, i: int, at: datetime, listener: int) -> tuple[dict[str, Any], int]:
        """One play of track ``i`` starting at ``at``: (record, ms of wall time it took)."""
        duration = self.durations[i]
        r = rng.random()
        if r < 0.55:
            listened, segments = duration, [(0, duration)]  # heard through
        elif r < 0.8:
            listened = rng.randrange(5_000, duration)  # skipped
            segments = [(0, listened)]
        elif r < 0.9:  # a pause: two touching segments
            cut = rng.randrange(10_000, duration - 10_000)
            listened, segments = duration, [(0, cut), (cut, duration)]
        else:  # a seek back: a passage heard twice
            a = rng.randrange(30_000, duration - 30_000)
            b = rng.randrange(10_000, a)
            listened, segments = duration + (a - b), [(0, a), (b, duration)]
        rec: dict[str, Any] = {"$type": PLAY, "track": {"uri": self.track_uri(i),
                                                        "cid": cid_for(b"track", _track_seq(self, i))},
                               "createdAt": iso(at), "listenedMs": listened, "completed": segments[-1][1] >= duration,
                               "client": "bench/1"}
        if rng.random() < 0.7:  # players that report segments
            rec["segments"] = [{"startMs": s, "endMs": e} for s, e in segments]
        rec["country"] = COUNTRIES[listener % len(COUNTRIES)]
        return rec, listened + rng.randrange(0, 5_000)

    def activity(self) -> Iterator[CommitEvent]:
        """Listening sessions, with likes, follows and tips interleaved in proportion."""
        s = self.spec
        rng = random.Random(s.seed * 7 + 2)
        window = timedelta(days=6).total_seconds()
        start = s.base - timedelta(days=6, hours=1)
        plays = likes = tips = follows = 0
        n_play = n_like = n_tip = n_follow = 0
        while plays < s.plays:
            listener = rng.randrange(s.listeners)
            did = listener_did(listener)
            at = start + timedelta(seconds=rng.random() * window)
            i = self.zipf_track(rng)
            for _ in range(min(s.plays - plays, rng.randint(1, 15))):
                rec, took = self.play_record(rng, i, at, listener)
                yield self._commit(did, PLAY, tid(n_play), rec, b"play")
                n_play += 1
                plays += 1
                at += timedelta(milliseconds=took)
                nxt = i + 1  # the album's next track, or a jump elsewhere
                same = nxt < s.tracks and nxt // s.tracks_per_album == i // s.tracks_per_album
                i = nxt if same and rng.random() < 0.6 else self.zipf_track(rng)
                # the other records, in proportion to the plays so far
                while likes < s.likes * plays // s.plays:
                    likes += 1
                    j = self.zipf_track(rng)
                    yield self._commit(did, LIKE, tid(10**9 + n_like), {
                        "$type": LIKE, "subject": {"uri": self.track_uri(j), "cid": cid_for(b"track", _track_seq(self, j))},
                        "createdAt": iso(at)}, b"like")
                    n_like += 1
                while follows < s.follows * plays // s.plays:
                    follows += 1
                    yield self._commit(listener_did(rng.randrange(s.listeners)), FOLLOW, tid(2 * 10**9 + n_follow), {
                        "$type": FOLLOW, "subject": artist_did(self.artist_of(self.zipf_track(rng))),
                        "createdAt": iso(at)}, b"follow")
                    n_follow += 1
                while tips < s.tips * plays // s.plays:
                    tips += 1
                    j = self.zipf_track(rng)
                    yield self._commit(did, TIP, tid(3 * 10**9 + n_tip), {
                        "$type": TIP, "subject": artist_did(self.artist_of(j)),
                        "track": {"uri": self.track_uri(j), "cid": cid_for(b"track", _track_seq(self, j))},
                        "amount": rng.choice([100, 200, 500, 1000]), "currency": "USD", "message": "thanks!",
                        "createdAt": iso(at)}, b"tip")
                    n_tip += 1

    def events(self) -> Iterator[CommitEvent]:
        """The whole workload: ``catalog()`` then ``activity()``."""
        yield from self.catalog()
        yield from self.activity()

    def invoices(self) -> list[tuple]:
        """``subscription_invoice`` rows (id, subscription, did, tier, status, period_start,
        period_end, amount_paid, fee, currency, paid_at, updated_at) of the paid listeners: a month
        covering every play."""
        s = self.spec
        start, end = iso(s.base - timedelta(days=20)), iso(s.base + timedelta(days=10))
        return [(f"in_bench_{listener_did(i)}", f"sub_bench_{listener_did(i)}", listener_did(i), "plus", "paid", start, end, 999, 100, "USD",
                 start, start) for i in self.paid]


def _coprime(a: int, b: int) -> bool:
    while b:
        a, b = b, a % b
    return a == 1


def _track_seq(w: Workload, i: int) -> int:
    """The seq of track ``i``'s commit (its record CID is ``cid_for(b"track", seq)``): the artists'
    profiles come first, then per album its tracks and the album."""
    per = w.spec.tracks_per_album
    return w.spec.artists + i + i // per + 1


INVOICE_SQL = ("INSERT INTO subscription_invoice (id, subscription, did, tier, status, period_start, period_end, "
               "amount_paid, fee, currency, paid_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")


def batches(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    """``events`` in lists of ``size``."""
    it = iter(events)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@dataclass
class IngestResult:
    """What ``ingest`` measured: ``records`` indexed, ``rejected``, ``events``, ``apply_s`` (seconds
    inside ``Indexer.apply``), ``generate_s`` (seconds making the events, not counted) and the
    music records (plays, likes, tips, tracks, albums) per second through the batch path."""

    records: int
    rejected: int
    events: int
    apply_s: float
    generate_s: float
    counters: dict[str, int]

    @property
    def rate(self) -> float:
        return self.records / self.apply_s if self.apply_s else 0.0


#: ``ingest`` on PostgreSQL runs ``ANALYZE`` once this share of the events so far arrived since the
#: last one (as autovacuum analyzes a table after 10% of it changed; without it, the plans of the
#: stream decision's statements go by statistics that do not know the newest day, ~10x slower).
ANALYZE_SHARE = 0.1


async def ingest(target: str, workload: Workload, batch: int = 500, progress: bool = False,
                 limit: int | None = None, analyze_share: float = ANALYZE_SHARE) -> IngestResult:
    """Migrate ``target`` (a SQLite path or a PostgreSQL URL), write the paid invoices, then apply
    the workload's events (at most ``limit``) in batches of ``batch`` through ``Indexer.apply``.
    On PostgreSQL, ``ANALYZE`` runs whenever ``analyze_share`` of the events so far came since the
    last one (0: never), as autovacuum would on a live server; its time is not counted. Raises on any database failure; a rejected
    record is counted, never raised."""
    from core import db
    from indexer.core import Indexer

    db.migrate(target)
    ix = Indexer(target, "bench")
    await ix.open()
    try:
        await ix.load_state()
        await ix.transact(lambda conn: conn.executemany(INVOICE_SQL, workload.invoices()))
        apply_s = gen_s = 0.0
        events = analyzed = 0
        analyze = analyze_share if db.is_postgres(target) else 0
        last = time.perf_counter()
        stream = workload.events()
        if limit is not None:
            stream = itertools.islice(stream, limit)
        it = batches(stream, batch)
        while True:
            t0 = time.perf_counter()
            chunk = next(it, None)
            t1 = time.perf_counter()
            gen_s += t1 - t0
            if chunk is None:
                break
            await ix.apply(chunk, chunk[-1].seq, prepared=True)
            apply_s += time.perf_counter() - t1
            events += len(chunk)
            if analyze and events - analyzed >= max(batch, analyze * events):
                await ix.run(ix.conn.execute, "ANALYZE")
                analyzed = events
            if progress and time.perf_counter() - last > 10:
                last = time.perf_counter()
                print(f"  {events:,} events, {ix.counters['records_indexed'] / apply_s:,.0f} records/s", flush=True)
    finally:
        await ix.close()
    return IngestResult(ix.counters["records_indexed"], sum(ix.rejections.values()), events, apply_s, gen_s,
                        dict(ix.counters))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--plays", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", help="SQLite file (default: a temporary one) or PostgreSQL URL (default: a throwaway cluster)")
    args = ap.parse_args()
    w = Workload(Spec(tracks=args.tracks, plays=args.plays, seed=args.seed))

    def report(r: IngestResult) -> None:
        print(f"{r.records:,} records ({r.rejected} rejected) from {r.events:,} events in {r.apply_s:.1f}s: "
              f"{r.rate:,.0f} records/s through Indexer.apply (generation {r.generate_s:.1f}s, not counted)")

    if args.engine == "postgresql" and not args.db:
        from devkit.pgserver import create_database, throwaway_cluster
        with throwaway_cluster() as url:
            report(asyncio.run(ingest(create_database(url, "bench"), w, args.batch, progress=True)))
        return
    if not args.db:
        import tempfile
        args.db = tempfile.mkdtemp(prefix="om-gen-") + "/bench.sqlite"
    report(asyncio.run(ingest(args.db, w, args.batch, progress=True)))


if __name__ == "__main__":
    main()
