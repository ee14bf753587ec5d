"""Open Music: an ATProtocol-native, decentralized music AppView.

Data flow: ``firehose`` (com.atproto.sync.subscribeRepos) -> ``indexer`` (lexicon-validated
records) -> database (SQLite) -> ``appview`` (XRPC queries, audio) / ``feedgen`` (feeds).
This package holds what they share: configuration, the database, identity and lexicons.
"""

__version__ = "0.1.0"
