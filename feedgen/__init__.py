"""The Bluesky feed generator (issue 13): feeds of Bluesky posts that share Open Music tracks,
albums and playlists, as ``app.bsky.feed.getFeedSkeleton`` answers (post AT-URIs, which Bluesky's
AppView hydrates), read from the ``share`` table the indexer fills (``indexer.share``).

``feedgen.app.FeedGenerator`` serves the endpoints and the did:web document's ``#bsky_fg``
service; ``feedgen.skeleton`` holds the feeds' queries and cursors; ``feedgen.publish`` writes the
``app.bsky.feed.generator`` records that make the feeds visible in Bluesky."""
