"""Plays partitioned by month on PostgreSQL (issue 15, "Data at scale"). On SQLite: nothing.

``play`` becomes ``PARTITION BY RANGE (sort_at)``: one partition per month, named
``play_YYYY_MM`` and bounded by text, ``FOR VALUES FROM ('2026-11') TO ('2026-12')``. ``sort_at``
is ISO-8601 UTC text (``2026-11-30T06:04:05.123Z``), so in our bytewise (``C``) collation every
instant of November 2026 sorts at or after ``'2026-11'`` and before ``'2026-12'``. The partition key
has the column's own collation, so a query's ``sort_at >= ?`` prunes partitions (a key spelled
``COLLATE "C"`` would not match the column's default collation, and would never prune). A
``play_default`` partition (``DEFAULT``) holds every row no month holds: plays before
``FIRST_MONTH`` (a client may claim any ``createdAt``; ``core.db.sort_at`` never lets it be later
than indexing) and months not created yet. ``indexer.partitions`` creates the months ahead and
moves rows out of the default partition.

**The key.** A partitioned table's primary key must hold the partition key, so the primary key is
``(uri, sort_at)``, no longer ``(uri)``. The uniqueness of ``uri`` alone is still kept, by the
indexer: a play row is written only by ``indexer.play.insert``, which ``indexer.core`` calls for a
record op together with the ``INSERT INTO record`` of the same URI, in the same transaction
(``record.uri`` is an unpartitioned primary key). An update or delete first deletes the ``record``
row and its play (``_remove`` -> ``indexer.play.delete``, ``DELETE FROM play WHERE uri = ?``). A
create of a URI already held fails on ``record``'s key (before: possibly on ``play``'s, which now
fails only when ``sort_at`` is the same too), and what the op wrote is rolled back (its savepoint,
or the optimistic batch, which is then applied again op by op). So a second play row for one URI
cannot outlive its transaction. Nothing relies on a conflict on ``play.uri`` (no ``ON CONFLICT`` or
``INSERT OR IGNORE`` into ``play``). A unique ``uri`` across partitions would need one more table
kept by a trigger (one more index write and lookup per play, on the ingest path); ``record`` already
is that table. An ``UPDATE`` of ``sort_at`` (the indexer never issues one: an update is
delete-then-insert) moves the row to its month's partition (PostgreSQL 11 and later).

**In one transaction** (yoyo runs each migration in one): ``LOCK TABLE play IN SHARE MODE`` (writes
to ``play`` wait for the commit, reads go on), the new table with its default and monthly partitions
(every month from the first month holding plays, no earlier than ``FIRST_MONTH``, to
``AHEAD_MONTHS`` after the current one), every row copied, the primary key, the old table's indexes
(read from the catalogue, so those later migrations add come along; built on the parent, so on
every partition) and ``ANALYZE``; then the swap, during which reads wait too: the old table
dropped, the new one renamed ``play``, its indexes renamed as the old ones were, the old table's
triggers (none today) replayed on it. Measured on 1M plays (``bench.partitions``' data, 2 busy
CPUs): 18 s; the rollback builds the unpartitioned table back the same way (10 s).
"""

from __future__ import annotations

from core.migration_steps import pg_only

__depends__ = {"0032_portable_track_lookups"}

#: Plays before this month stay in the default partition (no month of their own at migration).
FIRST_MONTH = "2023-01"
#: Months created after the current one (``indexer.partitions`` keeps them ahead after that).
AHEAD_MONTHS = 3

#: ``play``'s indexes and triggers, rebuilt on ``{new}`` (indexes named ``<name>_swap`` until the swap).
_COPY_INDEXES = r"""
  SELECT coalesce(array_agg(pg_get_triggerdef(t.oid) ORDER BY t.oid), '{{}}') INTO trigger_defs
    FROM pg_trigger t WHERE t.tgrelid = 'play'::regclass AND NOT t.tgisinternal AND t.tgparentid = 0;
  FOR ix IN SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = 'play'::regclass AND NOT i.indisprimary ORDER BY c.relname LOOP
    EXECUTE regexp_replace(ix.def, '^(CREATE (UNIQUE )?INDEX )\S+ ON (ONLY )?(\S+\.)?play ',
                           '\1' || quote_ident(ix.name || '_swap') || ' ON {new} ');
  END LOOP;
  ANALYZE {new};
"""
#: The swap (readers of ``play`` wait from here to the commit): the old table out, the new one in,
#: its indexes and primary key renamed as the old ones were, the triggers replayed.
_SWAP = """
  DROP TABLE play;
  ALTER TABLE {new} RENAME TO play;
  ALTER TABLE play RENAME CONSTRAINT {new}_pkey TO play_pkey;
  FOR ix IN SELECT c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = 'play'::regclass AND c.relname LIKE '%\\_swap' LOOP
    EXECUTE format('ALTER INDEX %I RENAME TO %I', ix.name, left(ix.name, length(ix.name) - length('_swap')));
  END LOOP;
  FOREACH d IN ARRAY trigger_defs LOOP
    EXECUTE d;
  END LOOP;
"""

APPLY = f"""
LOCK TABLE play IN SHARE MODE;
DO $$
DECLARE
  ix record;
  trigger_defs text[];
  d text;
  first_month text;
  month date;
  last_month date := date_trunc('month', now() AT TIME ZONE 'UTC') + interval '{AHEAD_MONTHS} months';
BEGIN
  CREATE TABLE play_partitioned (LIKE play INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
    PARTITION BY RANGE (sort_at);
  CREATE TABLE play_default PARTITION OF play_partitioned DEFAULT;
  SELECT substr(min(sort_at), 1, 7) INTO first_month FROM play WHERE sort_at >= '{FIRST_MONTH}';
  IF first_month IS NULL OR first_month !~ '^[0-9]{{4}}-(0[1-9]|1[0-2])$' THEN
    first_month := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
  END IF;
  month := to_date(first_month, 'YYYY-MM');
  WHILE month <= last_month LOOP
    EXECUTE format('CREATE TABLE %I PARTITION OF play_partitioned FOR VALUES FROM (%L) TO (%L)',
                   'play_' || to_char(month, 'YYYY_MM'), to_char(month, 'YYYY-MM'),
                   to_char(month + interval '1 month', 'YYYY-MM'));
    month := month + interval '1 month';
  END LOOP;
  INSERT INTO play_partitioned SELECT * FROM play;
  ALTER TABLE play_partitioned ADD CONSTRAINT play_partitioned_pkey PRIMARY KEY (uri, sort_at);
{_COPY_INDEXES.format(new="play_partitioned")}
{_SWAP.format(new="play_partitioned")}
END
$$;
"""

ROLLBACK = f"""
LOCK TABLE play IN SHARE MODE;
DO $$
DECLARE
  ix record;
  trigger_defs text[];
  d text;
BEGIN
  CREATE TABLE play_unpartitioned (LIKE play INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE);
  INSERT INTO play_unpartitioned SELECT * FROM play;
  ALTER TABLE play_unpartitioned ADD CONSTRAINT play_unpartitioned_pkey PRIMARY KEY (uri);
{_COPY_INDEXES.format(new="play_unpartitioned")}
{_SWAP.format(new="play_unpartitioned")}
END
$$;
"""

steps = [pg_only(APPLY, ROLLBACK)]
