"""AppView: serves the catalog, search, profiles, stats and stream history over XRPC
(``/xrpc/fm.openmusic.*``), and the creators' audio and artwork from their PDS blobs."""
