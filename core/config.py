"""Configuration: one ``Settings`` object, filled from ``OPENMUSIC_*`` environment variables and
command-line flags (flags win). Production defaults point at the public ATProto network."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

#: The public relay's firehose and the public PLC directory.
DEFAULT_FIREHOSE = "wss://bsky.network"
DEFAULT_PLC = "https://plc.directory"
#: The values of ``Settings.role`` (``openmusic run --role``).
ROLES = ("all", "api", "indexer")


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_values(cls: type, environ: dict[str, str] | None, overrides: dict[str, object]) -> dict[str, object]:
    """Constructor arguments of the dataclass ``cls`` from ``OPENMUSIC_<FIELD_NAME_UPPER>`` variables
    of ``environ`` (default ``os.environ``; int and bool fields parsed; ``extra`` skipped), then the
    non-None ``overrides``. Raises ``ValueError`` when an integer variable does not parse."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for f in fields(cls):
        if f.name == "extra":
            continue
        raw = environ.get(f"OPENMUSIC_{f.name.upper()}")
        if raw is None:
            continue
        if f.type in ("int", int):
            try:
                values[f.name] = int(raw)
            except ValueError as exc:
                raise ValueError(f"OPENMUSIC_{f.name.upper()} must be an integer, got {raw!r}") from exc
        elif f.type in ("bool", bool):
            values[f.name] = _env_bool(raw)
        else:
            values[f.name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    return values


@dataclass
class Settings:
    """Runtime settings of the AppView, firehose consumer and indexer.

    Every field can be set by the environment variable ``OPENMUSIC_<FIELD_NAME_UPPER>``;
    booleans accept 1/true/yes/on.
    """

    #: Relay or PDS to subscribe to: ``wss://host`` (the ``/xrpc/com.atproto.sync.subscribeRepos``
    #: path is added when absent); ``http(s)://`` is turned into ``ws(s)://``.
    firehose_url: str = DEFAULT_FIREHOSE
    #: did:plc directory used to resolve DIDs.
    plc_url: str = DEFAULT_PLC
    #: SQLite database file; its folder also keeps the development key files and the leader lock.
    db_path: str = "data/openmusic.sqlite"
    #: ``postgresql://...`` to keep the index in PostgreSQL instead of ``db_path`` (issue 15; empty:
    #: SQLite). Use ``database``, which says which one is in force.
    database_url: str = ""
    #: ``postgresql://...`` of a read replica of ``database_url`` (``OPENMUSIC_DATABASE_READ_URL``):
    #: the AppView's reader pool (its queries) reads there, while every write (the indexer, payments,
    #: sessions, the leader locks) goes to the primary. Empty: read from ``database`` too. A replica
    #: lags its primary (streaming replication: usually milliseconds, longer under load), so a page
    #: read right after a write made through this AppView (read-your-writes) may show the state before
    #: it for a moment. Use ``database_read``, which says which one is in force.
    database_read_url: str = ""
    #: Where verified blobs (audio, images) fetched from creators' PDSes are cached.
    blob_cache_dir: str = "data/blobs"
    #: Address and port the AppView's HTTP server binds to.
    host: str = "127.0.0.1"
    port: int = 8080
    #: Base URL that clients reach the AppView at; audio and artwork URLs in views are built on it.
    #: Empty: ``http://{host}:{port}``.
    public_url: str = ""
    #: Optional XRPC service (a PDS or AppView) used to resolve handles with
    #: ``com.atproto.identity.resolveHandle``; empty: DNS TXT ``_atproto`` then HTTPS well-known.
    handle_resolver_url: str = ""
    #: Let outbound fetches (DID documents, blobs) reach loopback and private addresses.
    #: Only for a local development network; off in production (SSRF guard).
    allow_private_hosts: bool = False
    #: Seconds a resolved DID document / handle stays fresh.
    identity_ttl_s: int = 86400
    #: Largest blob (bytes) the AppView fetches and caches from a PDS.
    max_blob_bytes: int = 100 * 1024 * 1024
    #: Bound of the blob cache (``blob_cache_dir``), bytes: past it the least recently served blobs
    #: are deleted (they are fetched again when asked for).
    blob_cache_max_bytes: int = 2 * 1024 ** 3
    #: Where to start when no cursor is stored yet: -1 = the live head (default; backfill older
    #: records separately), 0 = replay everything the host still holds (a local PDS).
    start_cursor: int = -1
    #: Verify commit signatures, MST inclusion and prevData inversion before indexing (sync spec).
    verify_commits: bool = True
    #: Worker processes for commit verification of busy batches (0: verify in the consumer's process).
    #: Default: one less than the CPU count (the consumer keeps a core for decoding and indexing).
    verify_workers: int = field(default_factory=lambda: max(0, (os.cpu_count() or 1) - 1))
    #: Most firehose events applied in one database transaction.
    firehose_batch_size: int = 500
    #: SQLite reader connections serving the AppView's queries (a pool; WAL lets them read at once).
    #: More readers keep a slow query from holding up the rest; past the core count they cost more in
    #: thread switching than they give (``bench/http.py``). Default: the CPU count, at most 4.
    db_readers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    #: Log level for the ``openmusic`` loggers.
    log_level: str = "INFO"
    #: What ``openmusic run`` does in this process (``ROLES``): ``all`` (the default) serves the AppView
    #: and indexes while it leads; ``api`` serves the AppView, web app and feeds from the database and
    #: never indexes; ``indexer`` indexes (firehose, resync, labels, payment workers, periodic jobs)
    #: while it leads and serves only ``/health``. One process leads at a time (``core.leader``).
    role: str = "all"
    #: Comma-separated DIDs of the operator's accounts: they may read every artist's analytics
    #: (``fm.openmusic.analytics.*``), as the artist and the artist's agreed managers may.
    operator_dids: str = ""
    #: Comma-separated DIDs of the labelers (atproto moderation services) whose labels we honour:
    #: each one's ``#atproto_labeler`` endpoint is followed (``com.atproto.label.subscribeLabels``)
    #: and its labels, verified with its ``#atproto_label`` key, hide (``!takedown``, ``!suspend``,
    #: ``!hide``) and travel in views (``firehose.labels``, ``indexer.labels``). Empty: none.
    labelers: str = ""
    #: Our own labeler's signing key (k256, 32 bytes hex): the labels the operators issue from the
    #: moderation queue (``!takedown``, ...) are signed with it and it is published as ``#atproto_label``
    #: in our did:web document (``indexer.labeler_issue``). Empty: a key made on first start and kept
    #: in ``label_key_file`` (development; in production set it, so the key does not depend on the data folder).
    label_key: str = field(default="", repr=False)
    #: Where the generated labeler key is kept when ``label_key`` is empty; empty: ``label_key.hex``
    #: beside ``db_path``.
    label_key_file: str = ""

    # -- payments (fm.openmusic.payment.*); off unless a Stripe key and a broker account are set --
    #: Our service DID (the did:web document at ``/.well-known/did.json``); empty: did:web of ``public_url``'s host.
    service_did: str = ""
    #: The one currency the broker settles (ISO 4217, upper case).
    currency: str = "USD"
    #: Tip limits in minor units: minimum to an artist / to a track, largest tip, per-payer daily cap.
    tip_min_artist: int = 100
    tip_min_track: int = 10
    tip_max: int = 50_000
    tip_daily_cap: int = 100_000
    #: Stripe secret key (``sk_...``) and webhook signing secret (``whsec_...``): environment only, never logged.
    stripe_api_key: str = field(default="", repr=False)
    stripe_webhook_secret: str = field(default="", repr=False)
    #: Another Stripe API base (localstripe in tests and the demo); empty: Stripe itself.
    stripe_api_base: str = ""
    #: The broker's repo: an account on a PDS where settlement records are written.
    broker_pds_url: str = ""
    broker_handle: str = ""
    broker_password: str = field(default="", repr=False)
    #: The attestation key (k256, 32 bytes hex) published as ``#attestation`` in our did:web document.
    attestation_key: str = field(default="", repr=False)
    #: Secret salt for the processor reference hashes in settlement records.
    processor_ref_salt: str = field(default="", repr=False)
    #: Comma-separated broker repo DIDs whose settlement records are indexed (our own broker is added).
    trusted_brokers: str = ""
    #: Paid tiers, JSON: ``[{"id": "plus", "name": "Plus", "monthlyPrice": 999, "stripePrice": "price_..."}]``
    #: (monthlyPrice in minor units of ``currency``). The free, ad-supported tier always exists.
    tiers: str = ""
    #: The platform's share of each subscriber's net fee, basis points (3000 = 30%).
    platform_share_bps: int = 3000
    #: ``openmusic payouts run`` pays an artist only when their balance reaches this, minor units.
    payout_threshold: int = 1000
    #: Another base URL for Stripe Connect calls (accounts, account links, transfers); empty: as the rest.
    stripe_connect_api_base: str = ""

    # -- the Bluesky feed generator (``feedgen``) and shares (``indexer.share``) --
    #: The feed generator's DID (its ``#bsky_fg`` service is ours); empty: ``service_did_resolved``
    #: (our did:web, whose document at ``/.well-known/did.json`` then carries the service).
    feedgen_did: str = ""
    #: The repo holding the ``app.bsky.feed.generator`` records of our feeds (their AT-URIs name it);
    #: empty: the first of ``operator_dids``, else feeds of any publisher that name our DID are served.
    feedgen_publisher_did: str = ""
    #: Comma-separated other public URLs of this site (old domains, mirrors) whose track, album and
    #: playlist pages count as shared when a Bluesky post links to them; ``base_url`` always counts.
    share_site_urls: str = ""
    #: Extra, unparsed values (for tests and extensions).
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), then apply non-None ``overrides``.

        Raises ``ValueError`` when an integer variable does not parse.
        """
        values = env_values(cls, environ, overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def base_url(self) -> str:
        """Public base URL without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def service_did_resolved(self) -> str:
        """``service_did``, or ``did:web:<host>`` of the public URL (port as ``%3A``)."""
        if self.service_did:
            return self.service_did
        host = self.base_url.split("://", 1)[1].split("/")[0]
        return "did:web:" + host.replace(":", "%3A")

    @property
    def feedgen_did_resolved(self) -> str:
        """``feedgen_did``, or our service DID (``service_did_resolved``)."""
        return self.feedgen_did or self.service_did_resolved

    @property
    def feedgen_publisher(self) -> str:
        """``feedgen_publisher_did``, or the first of ``operator_dids``, or "" (any publisher)."""
        if self.feedgen_publisher_did:
            return self.feedgen_publisher_did
        operators = [d.strip() for d in self.operator_dids.split(",") if d.strip()]
        return operators[0] if operators else ""

    @property
    def labeler_dids(self) -> list[str]:
        """``labelers`` as a list of DIDs, in order, without blanks or repeats."""
        return list(dict.fromkeys(d.strip() for d in self.labelers.split(",") if d.strip()))

    @property
    def database(self) -> str:
        """The database in force: ``database_url`` when set, else the SQLite file ``db_path``
        (``core.db`` takes either)."""
        return self.database_url or self.db_path

    @property
    def database_read(self) -> str:
        """Where the AppView's readers read: ``database_read_url`` when set, else ``database``."""
        return self.database_read_url or self.database

    @property
    def label_key_path(self) -> str:
        """``label_key_file``, or ``label_key.hex`` in the folder of ``db_path``."""
        return self.label_key_file or str(Path(self.db_path).parent / "label_key.hex")

    @property
    def share_sites(self) -> list[str]:
        """Origins whose pages count in shared posts: ``base_url`` first, then ``share_site_urls``."""
        extra = [u.strip().rstrip("/") for u in self.share_site_urls.split(",") if u.strip()]
        return [self.base_url, *[u for u in extra if u != self.base_url]]

    @property
    def payments_enabled(self) -> bool:
        """True when a Stripe key, a webhook secret, a broker account and an attestation key are set."""
        return bool(self.stripe_api_key and self.stripe_webhook_secret and self.broker_pds_url and self.broker_handle
                    and self.broker_password and self.attestation_key)

    @property
    def subscribe_url(self) -> str:
        """Full ``subscribeRepos`` WebSocket URL (without cursor)."""
        url = self.firehose_url.rstrip("/")
        if url.startswith("http://"):
            url = "ws://" + url[len("http://"):]
        elif url.startswith("https://"):
            url = "wss://" + url[len("https://"):]
        if not url.endswith("/xrpc/com.atproto.sync.subscribeRepos"):
            if url.endswith("/xrpc"):
                url += "/com.atproto.sync.subscribeRepos"
            else:
                url += "/xrpc/com.atproto.sync.subscribeRepos"
        return url

    @property
    def cursor_source(self) -> str:
        """Key under which this firehose's cursor is stored: seqs are host-scoped."""
        return self.subscribe_url.split("?")[0]

    def ensure_dirs(self) -> None:
        """Create the folders of the database and blob cache."""
        Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.blob_cache_dir).mkdir(parents=True, exist_ok=True)
