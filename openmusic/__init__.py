"""Open Music: an ATProtocol-native, decentralized music AppView.

Data flow: ``firehose`` (com.atproto.sync.subscribeRepos) -> ``indexer`` (lexicon-validated
records) -> database (SQLite) -> ``appview`` (XRPC queries, audio) and ``payments`` -> ``web`` (the
web app), ``feedgen`` (feeds). This package is the composition root on top of them: the command
line (``openmusic.cli``) and the runtime that wires the parts together (``openmusic.runtime``). The
shared core they all import is ``core``; the demo and test kit is ``devkit``.
"""

__version__ = "0.1.0"
