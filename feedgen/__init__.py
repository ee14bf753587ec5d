"""Feed generator (``app.bsky.feed.getFeedSkeleton`` and music feeds). Not built yet: it will read
the same database the indexer writes. See the project's issues."""
