"""Each account's plays and likes, counted as they are indexed (issue 15: counters are maintained
incrementally, never counted over ``play`` at query time). ``fm.openmusic.actor.getProfile``'s
``playsCount`` and ``likesCount`` read ``actor_count``; ``indexer.play`` and ``indexer.like`` keep it
(``indexer.stats.count_actor``). Every play and like record an account holds counts, whatever its
standing, as the counts this replaces did. Runs on SQLite and PostgreSQL alike."""

from yoyo import step

__depends__ = {"0033_play_partitions"}

steps = [
    step("CREATE TABLE actor_count (did TEXT PRIMARY KEY, plays BIGINT NOT NULL DEFAULT 0, "
         "likes BIGINT NOT NULL DEFAULT 0)",
         "DROP TABLE actor_count"),
    step("INSERT INTO actor_count (did, plays) SELECT did, COUNT(*) FROM play GROUP BY did"),
    step("INSERT INTO actor_count (did, likes) SELECT did, COUNT(*) FROM like_record WHERE true GROUP BY did "
         "ON CONFLICT (did) DO UPDATE SET likes = excluded.likes"),
]
