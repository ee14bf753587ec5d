"""The shared core of Open Music, at the bottom of the layers: configuration (``core.config``), the
database and its migrations (``core.db``, ``core/migrations``), identity (``core.identity``: DIDs,
handles, DID documents), the lexicons (``core.lexicons``: our public contract in ``lexicons/``),
the outbound-fetch guard (``core.netguard``), media types (``core.mediatype``), shared errors
(``core.errors``) and writing records to a PDS (``core.publish``).

Everything else imports from here; nothing here imports from ``firehose``, ``indexer``,
``payments``, ``appview``, ``web``, the demo kit or the composition root (``tests/test_layers.py``)."""
