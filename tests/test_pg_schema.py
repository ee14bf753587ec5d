"""The PostgreSQL baseline schema against SQLite's (issue 15, step 1; docs/plans/postgresql.md §3),
on a throwaway PostgreSQL server started from the machine's binaries (``devkit.pgserver``).

Proves: ``devkit/pg_schema.py`` regenerates exactly the committed ``core/postgresql_baseline.sql``
(so it cannot rot); the migrations (SQLite's history marked applied, then the baseline, then the
rest) give every SQLite table and view a PostgreSQL twin with the same columns in the same order,
nullability, primary key, unique keys and index names (one accepted difference, ``PARTITIONED``:
``play`` is partitioned by month on PostgreSQL, so its primary key there is SQLite's plus the
partition key, and its partitions are PostgreSQL's only extra tables); the ported triggers do on
PostgreSQL what SQLite's do to the same rows (takedown labels hide new tracks, actors, albums and playlists; ledger
day totals; track facets in and out; an actor's first sighting and its counted flag; a track's rank
following its plays); identity columns number rows as SQLite's row IDs do; and SQLite's
``strftime``/``date``/``datetime``/``julianday``/``instr``/scalar ``min``/``max`` answer alike on
both engines, odd input included. The server is stopped and removed at the end of the module.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import db
from devkit import pg_schema, pgserver

needs_pg = pytest.mark.skipif(pgserver.bin_dir() is None,
                              reason="no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
                                     "(make setup installs them: apt-get install postgresql)")

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

#: The one accepted schema difference: tables partitioned on PostgreSQL (migration
#: ``0033_play_partitions``, ``indexer.partitions``) -> their partition key. PostgreSQL requires a
#: partitioned table's primary key to hold the partition key, so there it is SQLite's primary key
#: followed by that column (the uniqueness of SQLite's key alone is kept by the indexer: see the
#: migration's docstring). Their partitions are the only PostgreSQL tables without a SQLite twin.
PARTITIONED = {"play": "RANGE (sort_at)"}


class Both:
    """One migrated SQLite file and one migrated PostgreSQL database, written and read with the same
    SQL (``?`` placeholders, none in literals)."""

    def __init__(self, lite: sqlite3.Connection, pg) -> None:
        self.lite, self.pg = lite, pg

    @staticmethod
    def to_pg(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def run(self, sql: str, *args) -> None:
        self.lite.execute(sql, args)
        self.pg.execute(self.to_pg(sql), args)

    def rows(self, sql: str, *args) -> tuple[list[tuple], list[tuple]]:
        """The rows of ``sql`` on (SQLite, PostgreSQL)."""
        return ([tuple(r) for r in self.lite.execute(sql, args).fetchall()],
                [tuple(r) for r in self.pg.execute(self.to_pg(sql), args).fetchall()])

    def same(self, sql: str, *args) -> list[tuple]:
        """The rows of ``sql``, asserted equal on both engines."""
        lite, pg = self.rows(sql, *args)
        assert pg == lite, sql
        return lite


@pytest.fixture(scope="module")
def both(cluster, tmp_path_factory) -> Iterator[Both]:
    import psycopg

    path = tmp_path_factory.mktemp("pg-schema") / "openmusic.sqlite"
    url = pgserver.create_database(cluster, "om_schema")
    assert db.migrate(str(path)) > 0
    assert db.migrate(url) > 0
    lite = sqlite3.connect(path, isolation_level=None)
    pg = psycopg.connect(url, autocommit=True)
    try:
        yield Both(lite, pg)
    finally:
        lite.close()
        pg.close()


def test_the_committed_baseline_is_what_the_generator_writes():
    assert pg_schema.OUTPUT.read_text(encoding="utf-8") == pg_schema.build(), (
        "core/postgresql_baseline.sql is stale: run .venv/bin/python -m devkit.pg_schema")


def test_the_generator_stops_on_what_it_cannot_port(tmp_path):
    """A trigger without a port, or a port whose SQLite text changed, stops it (SchemaError)."""
    path = pg_schema.sqlite_schema(tmp_path / "s.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER new_one AFTER INSERT ON play BEGIN SELECT 1; END")
    conn.commit()
    conn.close()
    with pytest.raises(pg_schema.SchemaError, match="trigger new_one has no PostgreSQL port"):
        pg_schema.generate(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER new_one")
    conn.execute("DROP TRIGGER actor_first_seen")
    conn.execute("CREATE TRIGGER actor_first_seen AFTER INSERT ON actor BEGIN SELECT 2; END")
    conn.commit()
    conn.close()
    with pytest.raises(pg_schema.SchemaError, match="actor_first_seen changed in SQLite"):
        pg_schema.generate(path)


# --- the server kit ------------------------------------------------------------------------------

@needs_pg
def test_throwaway_cluster_is_bytewise_and_cleans_up_after_an_error(cluster):
    import psycopg

    with psycopg.connect(cluster) as conn:
        assert conn.execute("SHOW lc_collate").fetchone()[0] == "C"
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"
        assert conn.execute("SELECT 'B' < 'a', lower('ÉA'), upper('éa')").fetchone() == (True, "Éa", "éA")
    template = pgserver.create_database(cluster, "kit_template")
    with psycopg.connect(template, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x BIGINT)")
        conn.execute("INSERT INTO t VALUES (7)")
    copy = pgserver.create_database(cluster, "kit_copy", template="kit_template")
    with psycopg.connect(copy) as conn:
        assert conn.execute("SELECT current_database(), x FROM t").fetchone() == ("kit_copy", 7)

    seen: dict[str, object] = {}
    with pytest.raises(RuntimeError, match="boom"), pgserver.throwaway_cluster() as url:
        with psycopg.connect(url) as conn:
            seen["pid"] = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            seen["dir"] = conn.execute("SHOW data_directory").fetchone()[0]
        seen["url"] = url
        raise RuntimeError("boom")
    assert not Path(str(seen["dir"])).exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(str(seen["url"]), connect_timeout=2)


# --- the schema ------------------------------------------------------------------------------------

def _sqlite_tables(lite: sqlite3.Connection) -> list[tuple[str, str]]:
    rows = lite.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'view') "
                        "ORDER BY name").fetchall()
    virtual = {n for (n,) in lite.execute("SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL%'")}
    return [(t, n) for t, n in rows if not pg_schema.is_skipped(n, virtual)]


@needs_pg
def test_every_sqlite_table_and_view_has_a_postgresql_twin(both):
    lite, pg = both.lite, both.pg
    objects = _sqlite_tables(lite)
    assert len(objects) > 70 and ("view", "label_level") in objects
    pg_kinds = dict(pg.execute("SELECT table_name, table_type FROM information_schema.tables "
                               "WHERE table_schema = 'public'").fetchall())
    for kind, name in objects:
        assert pg_kinds.get(name) == ("VIEW" if kind == "view" else "BASE TABLE"), name
        info = lite.execute(f'PRAGMA table_info("{name}")').fetchall()
        cols = [r[1] for r in info]
        pg_cols = pg.execute("SELECT column_name, is_nullable FROM information_schema.columns "
                             "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                             (name,)).fetchall()
        extra = {"track_fts": ["rowid"], **{t: ["rowid"] for t in pg_schema.ROWID_TABLES}}.get(name, [])
        if name == "track_fts":
            assert [c for c, _ in pg_cols] == ["rowid", *cols, "tsv"], name
            continue
        assert [c for c, _ in pg_cols] == cols + extra, name
        if kind == "view":
            continue
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        pg_pk = [r[0] for r in pg.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", (name,)).fetchall()]
        if name in PARTITIONED:
            assert pg_pk == [*pk, PARTITIONED[name][len("RANGE ("):-1]], name
        else:
            assert pg_pk == (pk or extra), name
        # NOT NULL as declared (a primary key column is NOT NULL on PostgreSQL whatever it says)
        nullable = {r[1]: not r[3] and not r[5] for r in info}
        assert {c: n == "YES" for c, n in pg_cols if c in nullable} == nullable, name
        uniques = {tuple(r[2] for r in lite.execute(f'PRAGMA index_info("{ix[1]}")'))
                   for ix in lite.execute(f'PRAGMA index_list("{name}")') if ix[2] and ix[3] != "pk"}
        pg_uniques = {tuple(r[0]) for r in pg.execute(
            "SELECT array_agg(a.attname ORDER BY array_position(i.indkey::int2[], a.attnum)) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisunique AND NOT i.indisprimary AND i.indkey[0] <> 0 "
            "GROUP BY i.indexrelid", (name,)).fetchall()}
        assert pg_uniques == uniques, name
    lite_ix = {n for (n,) in lite.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    pg_ix = {n for (n,) in pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert lite_ix <= pg_ix
    # partitioned: exactly PARTITIONED, by its key; every PostgreSQL table without a twin is one of their partitions
    assert dict(pg.execute("SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_class c JOIN pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'p'").fetchall()
                ) == PARTITIONED
    twins = {n for (n,) in lite.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}  # yoyo's too
    strays = pg.execute("SELECT c.relname, c.relispartition, p.inhparent::regclass::text FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_inherits p ON p.inhrelid = c.oid "
                        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')").fetchall()
    strays = [r for r in strays if r[0] not in twins]
    assert strays and all(part and parent in PARTITIONED for _, part, parent in strays), strays
    lite_trg = {n for (n,) in lite.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    pg_trg = {n for (n,) in pg.execute("SELECT DISTINCT trigger_name FROM information_schema.triggers")}
    assert lite_trg == pg_trg == set(pg_schema.TRIGGERS)


@needs_pg
def test_identity_columns_number_rows_like_sqlite_row_ids(both):
    lite, pg = both.rows("INSERT INTO analytics_listener (did) VALUES (?) RETURNING id", "did:plc:numbered")
    assert lite == pg == [(1,)]
    both.run("INSERT INTO ledger_txn (idem_key, kind, created_at) VALUES (?, ?, ?)",
             "idem-ids", "tip", "2025-01-02T03:04:05.000Z")
    txn = both.same("SELECT id FROM ledger_txn WHERE idem_key = ?", "idem-ids")[0][0]
    for account in ("b", "a", "c"):
        both.run("INSERT INTO ledger_entry (txn_id, account, currency, amount) VALUES (?, ?, 'usd', 1)",
                 txn, account)
    assert both.same("SELECT account FROM ledger_entry WHERE txn_id = ? ORDER BY rowid", txn) == [
        ("b",), ("a",), ("c",)]


# --- the triggers and the view --------------------------------------------------------------------

LABELER = "did:plc:labelerschema"


@needs_pg
def test_takedown_labels_hide_new_rows_on_both_engines(both):
    both.run("INSERT INTO labeler (did, configured, updated_at) VALUES (?, 1, ?)", LABELER, "2025-01-01T00:00:00.000Z")
    both.run("INSERT INTO labeler (did, configured, updated_at) VALUES (?, 0, ?)", "did:plc:ignored",
             "2025-01-01T00:00:00.000Z")
    down = "at://did:plc:artistx/fm.openmusic.catalog.track/down"
    warned = "at://did:plc:artistx/fm.openmusic.catalog.track/warned"
    expired = "at://did:plc:artistx/fm.openmusic.catalog.track/expired"
    other = "at://did:plc:artistx/fm.openmusic.catalog.track/other"
    for src, uri, val, level, exp in [
        (LABELER, down, "!takedown", 2, None), (LABELER, down, "porn", 1, None), (LABELER, warned, "porn", 1, None),
        (LABELER, expired, "!takedown", 2, "2001-01-01T00:00:00.000Z"), ("did:plc:ignored", other, "!takedown", 2, None),
        (LABELER, "did:plc:suspended", "!suspend", 2, "2999-01-01T00:00:00.000Z"),
        (LABELER, "at://did:plc:artistx/fm.openmusic.catalog.album/a", "!takedown", 2, None),
        (LABELER, "at://did:plc:artistx/fm.openmusic.catalog.playlist/p", "!hide", 2, None),
    ]:
        both.run("INSERT INTO label (src, uri, val, neg, cts, exp, level, received_at) "
                 "VALUES (?, ?, ?, 0, ?, ?, ?, ?)", src, uri, val, "2025-01-01T00:00:00.000Z", exp, level,
                 "2025-01-01T00:00:00.000Z")
    assert both.same("SELECT uri, level FROM label_level ORDER BY uri") == [
        ("at://did:plc:artistx/fm.openmusic.catalog.album/a", 2),
        ("at://did:plc:artistx/fm.openmusic.catalog.playlist/p", 2), (down, 2), (warned, 1), ("did:plc:suspended", 2)]
    for n, uri in enumerate([down, warned, expired, other]):
        both.run("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, audio_cid, audio_mime, created_at, "
                 "sort_at, indexed_at, search_key) VALUES (?, 'did:plc:artistx', ?, 'c', 't', 1000, 'a', 'audio/wav', "
                 "?, ?, ?, ?)", uri, uri.rsplit("/", 1)[1], *["2025-01-01T00:00:00.000Z"] * 3, 1000 + n)
    assert both.same("SELECT uri, hidden FROM track WHERE did = 'did:plc:artistx' ORDER BY uri") == [
        (down, 2), (expired, 0), (other, 0), (warned, 1)]
    both.run("INSERT INTO album (uri, did, rkey, cid, title, created_at, sort_at, indexed_at) "
             "VALUES (?, 'did:plc:artistx', 'a', 'c', 't', ?, ?, ?)",
             "at://did:plc:artistx/fm.openmusic.catalog.album/a", *["2025-01-01T00:00:00.000Z"] * 3)
    both.run("INSERT INTO playlist (uri, did, rkey, cid, title, created_at, sort_at, indexed_at) "
             "VALUES (?, 'did:plc:artistx', 'p', 'c', 't', ?, ?, ?)",
             "at://did:plc:artistx/fm.openmusic.catalog.playlist/p", *["2025-01-01T00:00:00.000Z"] * 3)
    assert both.same("SELECT hidden FROM album UNION ALL SELECT hidden FROM playlist") == [(2,), (2,)]
    # actors: hidden, counted (active and not taken down) and first_seen
    both.run("INSERT INTO actor (did) VALUES (?)", "did:plc:suspended")
    both.run("INSERT INTO actor (did, active) VALUES (?, 0)", "did:plc:inactive")
    both.run("INSERT INTO actor (did) VALUES (?)", "did:plc:fine")
    both.run("INSERT INTO actor (did, first_seen) VALUES (?, ?)", "did:plc:seen", "2020-02-02T00:00:00.000Z")
    rows = both.same("SELECT did, hidden, counted FROM actor WHERE did IN (?, ?, ?, ?) ORDER BY did",
                     "did:plc:suspended", "did:plc:inactive", "did:plc:fine", "did:plc:seen")
    assert rows == [("did:plc:fine", 0, 1), ("did:plc:inactive", 0, 0), ("did:plc:seen", 0, 1),
                    ("did:plc:suspended", 2, 0)]
    lite, pg = both.rows("SELECT did, first_seen FROM actor WHERE did IN (?, ?) ORDER BY did",
                         "did:plc:fine", "did:plc:seen")
    for got in (lite, pg):
        assert ISO.match(got[0][1]) and got[0][1] > "2025" and got[1] == ("did:plc:seen", "2020-02-02T00:00:00.000Z")
    # the partial index of stale counted flags reads the same rule on both engines
    both.run("UPDATE actor SET active = 0 WHERE did = ?", "did:plc:fine")
    lite = both.lite.execute("SELECT did FROM actor WHERE counted <> (active = 1 AND hidden < 2)").fetchall()
    pg = both.pg.execute("SELECT did FROM actor WHERE counted <> CAST((active = 1 AND hidden < 2) AS INTEGER)").fetchall()
    assert lite == [tuple(r) for r in pg] == [("did:plc:fine",)]


@needs_pg
def test_ledger_entries_add_up_by_day_on_both_engines(both):
    for n, (kind, day) in enumerate([("tip", "2025-03-01"), ("tip", "2025-03-01"), ("payout", "2025-03-02")]):
        both.run("INSERT INTO ledger_txn (idem_key, kind, created_at) VALUES (?, ?, ?)",
                 f"idem-{n}", kind, f"{day}T10:00:00.000Z")
        txn = both.same("SELECT id FROM ledger_txn WHERE idem_key = ?", f"idem-{n}")[0][0]
        for account, amount in [("earnings:did:plc:artist1", 300 + n), ("credit:did:plc:fan", -300 - n),
                                ("platform:fees", 7), ("did:plc:bare", 1), ("xdid:odd", 2)]:
            both.run("INSERT INTO ledger_entry (txn_id, account, currency, amount) VALUES (?, ?, 'usd', ?)",
                     txn, account, amount)
    rows = both.same("SELECT day, kind, currency, account, amount, entries FROM ledger_day "
                     "WHERE day LIKE '2025-03-0_' ORDER BY day, kind, account")
    assert ("2025-03-01", "tip", "usd", "earnings", 601, 2) in rows
    assert ("2025-03-01", "tip", "usd", "", 6, 4) in rows  # 'did:plc:bare' and 'xdid:odd' keep no prefix
    assert ("2025-03-02", "payout", "usd", "platform:fees", 7, 1) in rows


TRACK_JSON = [
    '{"title": "a", "moods": ["Calm", " calm ", "DARK", "", 5, ["x"], "Ünïcode"], '
    '"aiDisclosure": {"tools": ["Suno ", "suno"]}, '
    '"splits": [{"did": "did:plc:s1", "bps": 1}, {"did": "did:plc:s1"}, {"did": 7}, [1]], '
    '"releaseDate": "2024-02-30T10:00:00+02:00"}',
    '{"title": "b", "moods": {"k": "Warm"}, "releaseDate": "2024-06-01"}',
    '{"title": "c", "moods": "Solo", "releaseDate": "not a date", "aiDisclosure": ["tools"]}',
    '{"title": "d", "releaseDate": "2024-06-01T25:00:00Z", "splits": []}',
    '{"title": "e", "releaseDate": "2024-01-01T24:00:00.12345Z", "moods": null}',
    '{"title": "f", "releaseDate": 20240101}',
]


@needs_pg
def test_track_facets_come_and_go_with_track_records_on_both_engines(both):
    for n, raw in enumerate(TRACK_JSON):
        both.run("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                 f"at://did:plc:facets/fm.openmusic.catalog.track/{n}", "did:plc:facets",
                 "fm.openmusic.catalog.track", str(n), "c", raw, "2025-01-01T00:00:00.000Z")
    both.run("INSERT INTO record (uri, did, collection, rkey, cid, json, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
             "at://did:plc:facets/fm.openmusic.catalog.album/9", "did:plc:facets", "fm.openmusic.catalog.album",
             "9", "c", TRACK_JSON[0], "2025-01-01T00:00:00.000Z")
    facets = both.same("SELECT track_uri, kind, value FROM track_facet WHERE track_uri LIKE 'at://did:plc:facets/%' "
                       "ORDER BY track_uri, kind, value")
    first = "at://did:plc:facets/fm.openmusic.catalog.track/0"
    assert [(k, v) for u, k, v in facets if u == first] == [
        ("mood", "calm"), ("mood", "dark"), ("mood", "Ünïcode"),  # lower() folds ASCII only
        ("release", "2024-03-01T08:00:00.000Z"), ("split", "did:plc:s1"), ("tool", "suno")]
    assert (f"{first[:-1]}1", "mood", "warm") in facets and (f"{first[:-1]}2", "mood", "solo") in facets
    assert (f"{first[:-1]}4", "release", "2024-01-01T24:00:00.123Z") in facets
    assert not [f for f in facets if f[0].endswith("/9") or f[0].endswith("/3") or f[0].endswith("/5")]
    both.run("DELETE FROM record WHERE did = 'did:plc:facets'")
    assert both.same("SELECT count(*) FROM track_facet WHERE track_uri LIKE 'at://did:plc:facets/%'") == [(0,)]


@needs_pg
def test_a_track_rank_follows_its_plays_on_both_engines(both):
    uri = "at://did:plc:ranked/fm.openmusic.catalog.track/r"
    both.run("INSERT INTO track (uri, did, rkey, cid, title, duration_ms, audio_cid, audio_mime, created_at, sort_at, "
             "indexed_at, search_key) VALUES (?, 'did:plc:ranked', 'r', 'c', 't', 1, 'a', 'audio/wav', ?, ?, ?, ?)",
             uri, *["2025-01-01T00:00:00.000Z"] * 3, 1736000000000000)
    both.run("INSERT INTO track_rank (search_key, plays, uri) VALUES (?, 0, ?)", 1736000000000000, uri)
    both.run("INSERT INTO track_stats (track_uri, plays) VALUES (?, 1) "
             "ON CONFLICT (track_uri) DO UPDATE SET plays = track_stats.plays + 1", uri)
    both.run("INSERT INTO track_stats (track_uri, plays) VALUES (?, 1) "
             "ON CONFLICT (track_uri) DO UPDATE SET plays = track_stats.plays + 1", uri)
    assert both.same("SELECT plays FROM track_rank WHERE uri = ?", uri) == [(2,)]  # the insert set none
    both.run("UPDATE track_stats SET plays = 41 WHERE track_uri = ?", uri)
    assert both.same("SELECT plays FROM track_rank WHERE uri = ?", uri) == [(41,)]


# --- SQLite's functions ---------------------------------------------------------------------------

def _times() -> list[str]:
    rnd = random.Random(15)
    out = ["2024-02-30", "2024-01-01T24:00", "2024-01-01 T 10:00:00.9995Z", "12:30", "2460000.5", "2024",
           "-0001-01-01", "0000-01-01", "2024-01-01T10:00+14:00", "2024-01-01T10:00:00.", "9999-12-31T23:59:59.999",
           "9999-12-31T24:00", " 2024-01-01", "2024-01-01  ", "1e3", "2024-01-01T10:00 z ", "24:00", "10:00+01:00",
           "2024-01-01T10:00:01.0005", "2024-13-01", "2024-01-32", "2024-01-01T10:60", "2024-01-01T10:00-15:00",
           "2024-06-15T23:59:59.123456789Z", "x", "", "-1", "2025-03-04T05:06:07.089Z", "-4713-11-24T11:59:59",
           "2000-02-29T12:00:00+00:00", "1999-12-31T23:59:59.999Z"]
    for _ in range(150):
        y = rnd.randint(-50, 9999) if rnd.random() < 0.2 else rnd.randint(1950, 2100)
        full = (f"{'-' if y < 0 else ''}{abs(y):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 31):02d}T"
                f"{rnd.randint(0, 24):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}.{rnd.randint(0, 9999):04d}")
        out.append(full[:rnd.choice([10, 16, 19, 23, 24])] + rnd.choice(["", "Z", "+05:30", "-11:00"]))
        out.append(str(round(rnd.uniform(0, 5400000), rnd.randint(0, 9))))
    return out


MODIFIERS = [[], ["start of day"], ["weekday 0", "-6 days"], ["-30 days"], ["+1.5 hours"], ["start of month"],
             ["start of year", "+10 minutes"], ["weekday 3"], ["-0.25 seconds"], ["weekday 7"], ["+ 3 days"]]


@needs_pg
def test_sqlite_date_functions_answer_alike_on_postgresql(both):
    fmt = "%Y-%m-%dT%H:%M:%fZ|%d|%H|%j|%m|%M|%s|%S|%w|%W|%Y|%%"
    compared = 0
    for n, t in enumerate(_times()):
        for mods in (MODIFIERS if n < 40 else [MODIFIERS[n % len(MODIFIERS)]]):
            marks = ", ?" * len(mods)
            both.same(f"SELECT strftime(?, ?{marks}), julianday(?{marks}), datetime(?{marks}), "
                      f"strftime('%Q', ?{marks})", fmt, t, *mods, t, *mods, t, *mods, t, *mods)
            compared += 1
    assert compared > 700
    assert both.same("SELECT julianday(?), julianday(?), date(?, 'weekday 0', '-6 days')",
                     "2000-01-01T12:00:00.000Z", "2000-01-01", "2025-03-05") == [(2451545.0, 2451544.5, "2025-03-03")]
    import psycopg

    with pytest.raises(psycopg.errors.FeatureNotSupported, match="'localtime' is not supported"):
        both.pg.execute("SELECT strftime('%Y', '2024-01-01', 'localtime')")
    now, drift = both.pg.execute("SELECT iso_now(), abs(julianday(iso_now()) - julianday('now')) * 86400").fetchone()
    assert ISO.match(now) and drift < 2


@needs_pg
def test_instr_min_and_max_answer_alike_on_postgresql(both):
    for hay, needle in [("earnings:did:plc:x", "did:"), ("abc", ""), ("abc", "z"), (None, "a"), ("aXbX", "X")]:
        both.same("SELECT instr(?, ?)", hay, needle)
    assert both.same("SELECT max(1, 2), min(3, 2), max(0.0, 2.5), min(5, NULL), max(NULL, 1), max('a', 'b')") == [
        (2, 2, 2.5, None, None, "b")]
    both.run("CREATE TEMP TABLE scalar_agg (x INTEGER)")
    both.run("INSERT INTO scalar_agg VALUES (4), (9), (1)")
    assert both.same("SELECT max(x), min(x), min(count(*), 2) FROM scalar_agg") == [(9, 1, 2)]
