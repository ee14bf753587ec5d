"""Indexer: applies firehose events to the AppView database.

``indexer.core.Indexer`` validates records against our lexicons, applies create / update / delete
through one module per collection (``track``, ``album``, ``profile``, ``play``, ``like``), orders
writes per repo by ``rev``, and stores the firehose cursor in the same transaction as the writes,
so a crash resumes with no gap and no double effect.
"""
