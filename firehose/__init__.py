"""Firehose consumer: reads ``com.atproto.sync.subscribeRepos`` from a relay or a PDS, decodes frames
into ``firehose.events`` objects, and hands them to a handler (the indexer) with a durable cursor."""
