"""What the AppView's HTTP layer needs from the process that serves it (the composition root,
``openmusic.runtime.Runtime``, satisfies it). Declared here so that ``appview`` names only the
layers below it (core, firehose, indexer) and its sibling ``payments``, never the runtime above."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import aiosqlite

    from appview.blobs import BlobStore
    from appview.views import ViewContext
    from core.config import Settings
    from core.db import ReaderPool
    from firehose.consumer import FirehoseConsumer
    from firehose.verify import Verifier
    from indexer.core import Indexer
    from indexer.resync import Resyncer
    from payments.auth import ServiceAuth
    from payments.service import Payments


class AppViewDeps(Protocol):
    """The running parts the AppView's routes read: settings, readers and views, the blob cache,
    the pipeline's status (consumer, indexer, resyncer, verifier) and, with payments on,
    ``payments`` and ``auth`` (else None)."""

    settings: Settings
    reader: ReaderPool | aiosqlite.Connection
    views: ViewContext
    blobs: BlobStore
    consumer: FirehoseConsumer | None
    indexer: Indexer | None
    resyncer: Resyncer | None
    verifier: Verifier | None
    payments: Payments | None
    auth: ServiceAuth | None

    async def blob_source(self, did: str, cid: str, kind: str) -> tuple[str, str | None] | None:
        """(mime type, PDS URL) of a blob an indexed record of an active account references, or None."""
        ...

    def did_document(self) -> dict | None:
        """Our did:web document (``Runtime.did_document``), or None when our service DID is not the
        did:web of this host (then ``/.well-known/did.json`` answers 404)."""
        ...

    def label_health(self) -> dict | None:
        """Label streams and counters for ``/health`` (``Runtime.label_health``); None without labelers."""
        ...
