"""Suspended and taken-down listeners count for nothing (issue 14; the rule: ``indexer.standing``).

``actor.counted`` is 1 while the account's plays, likes, votes, reviews and follows are in the
aggregates the indexer keeps incrementally (``track_stats``, ``track_listener``, ``track_day``,
``track_day_listener``, ``track_second``, ``vote_current``/``vote_count``,
``review_current``/``review_count``, ``follow_current``/``follow_count``), 0 while they are taken out.
``indexer.stats.refresh_account`` moves an account in or out and flips the flag in one transaction;
the flag follows the rule ``active = 1 AND hidden < 2`` (an account active and not taken down by a
``!takedown`` or ``!suspend`` label).

It starts as ``active``: what those aggregates held until now (the accounts that were active,
whether a label had taken them down or not). Accounts a label took down are then taken out by the
label store's first catch-up (``indexer.labels.LabelStore.open``, at start).

``actor_counted_stale`` indexes the accounts whose flag differs from the rule (none, but for the
moment between a label's commit and the catch-up that follows it), so finding them costs nothing;
``actor_out_of_standing`` the accounts out of standing (few), so that a query over many listeners
can count them all and subtract those instead of looking each one up.
``actor_counted_new``: a new ``actor`` row (nothing of it is counted yet) starts in step with the
rule, the hiding labels stored before it (``label_level``) included.
"""

from yoyo import step

__depends__ = {"0025_copyright"}

steps = [
    step("ALTER TABLE actor ADD COLUMN counted INTEGER NOT NULL DEFAULT 1"),
    step("UPDATE actor SET counted = (active = 1)"),
    step("CREATE INDEX actor_counted_stale ON actor (did) WHERE counted <> (active = 1 AND hidden < 2)",
         "DROP INDEX actor_counted_stale"),
    step("CREATE INDEX actor_out_of_standing ON actor (did) WHERE NOT (active = 1 AND hidden < 2)",
         "DROP INDEX actor_out_of_standing"),
    step("""CREATE TRIGGER actor_counted_new AFTER INSERT ON actor BEGIN
        UPDATE actor SET counted = (NEW.active = 1
            AND COALESCE((SELECT level FROM label_level WHERE uri = NEW.did), 0) < 2) WHERE did = NEW.did; END""",
         "DROP TRIGGER actor_counted_new"),
]
