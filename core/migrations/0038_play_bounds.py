"""The months of ``play`` in order, on PostgreSQL (issue 15). On SQLite: nothing.

Migration 0033 gave ``play`` a ``DEFAULT`` partition for the rows no month holds. A default partition
may hold any value, so PostgreSQL cannot read the months in order: a listener's newest plays
(``ORDER BY sort_at DESC LIMIT n``) were a ``Merge Append`` that opened every month's index. Two
bounded partitions take its place: ``play_before``, ``FROM (MINVALUE) TO (<first month>)`` (a
client may claim any old ``createdAt``), and ``play_after``, ``FROM (<month after the last>) TO
(MAXVALUE)`` (``core.db.sort_at`` is never later than indexing, and ``indexer.partitions`` keeps
three months ahead, so it stays empty unless that upkeep stops for months). With them the plan is an
``Append`` from the newest month that stops once it has ``n`` rows.

In one transaction: ``play_default`` detached (readers and writers of ``play`` wait for the commit),
any month missing between the first and the last created (the months must be contiguous now: a
row no partition accepts cannot be written), the two bounded partitions created, the old default's
rows written back through ``play`` (each lands in its month or a bounded partition), and the old
default dropped. The rollback puts a default partition back the same way.
"""

from __future__ import annotations

from core.migration_steps import pg_only

__depends__ = {"0037_derived_blob"}

_MONTHS = r"""
  SELECT min(m), max(m) INTO first_month, last_month FROM (
    SELECT substring(pg_get_expr(c.relpartbound, c.oid) FROM '^FOR VALUES FROM \(''([0-9]{4}-[0-9]{2})''\)') AS m
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'play'::regclass) bounds;
"""

APPLY = f"""
DO $$
DECLARE
  first_month text;
  last_month text;
  month date;
BEGIN
  IF to_regclass('play_default') IS NULL THEN
    RETURN;
  END IF;
  ALTER TABLE play DETACH PARTITION play_default;
{_MONTHS}
  IF first_month IS NULL THEN
    first_month := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
    last_month := first_month;
  END IF;
  month := to_date(first_month, 'YYYY-MM');
  WHILE month <= to_date(last_month, 'YYYY-MM') LOOP
    IF to_regclass('play_' || to_char(month, 'YYYY_MM')) IS NULL THEN
      EXECUTE format('CREATE TABLE %I PARTITION OF play FOR VALUES FROM (%L) TO (%L)',
                     'play_' || to_char(month, 'YYYY_MM'), to_char(month, 'YYYY-MM'),
                     to_char(month + interval '1 month', 'YYYY-MM'));
    END IF;
    month := month + interval '1 month';
  END LOOP;
  EXECUTE format('CREATE TABLE play_before PARTITION OF play FOR VALUES FROM (MINVALUE) TO (%L)', first_month);
  EXECUTE format('CREATE TABLE play_after PARTITION OF play FOR VALUES FROM (%L) TO (MAXVALUE)',
                 to_char(to_date(last_month, 'YYYY-MM') + interval '1 month', 'YYYY-MM'));
  INSERT INTO play SELECT * FROM play_default;
  DROP TABLE play_default;
  ANALYZE play;
END
$$;
"""

ROLLBACK = """
DO $$
BEGIN
  IF to_regclass('play_before') IS NULL THEN
    RETURN;
  END IF;
  ALTER TABLE play DETACH PARTITION play_before;
  ALTER TABLE play DETACH PARTITION play_after;
  CREATE TABLE play_default PARTITION OF play DEFAULT;
  INSERT INTO play SELECT * FROM play_before;
  INSERT INTO play SELECT * FROM play_after;
  DROP TABLE play_before;
  DROP TABLE play_after;
END
$$;
"""

steps = [pg_only(APPLY, ROLLBACK)]
