"""Benchmarks: ``python -m bench.record`` records a real stream from the reference PDS,
``python -m bench.firehose`` replays it through the consumer and indexer, ``python -m bench.queries``
measures query latency on a large database. ``make bench`` runs all three."""
