"""``/metrics`` in the Prometheus text format (prometheus-client). A collector reads the running
counters at scrape time, so the hot path only bumps plain integers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from appview.deps import AppViewDeps

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RuntimeCollector(Collector):
    """Metrics of one ``AppViewDeps``: firehose, verification, indexing and resync figures."""

    def __init__(self, rt: AppViewDeps) -> None:
        self.rt = rt
        self.desynchronized = 0  # refreshed by ``refresh`` before each scrape

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        rt = self.rt
        st = rt.consumer.status if rt.consumer else None
        ix = rt.indexer.counters if rt.indexer else {}

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("openmusic_firehose_connected", "1 while the firehose WebSocket is open", 1 if st and st.connected else 0)
        yield counter("openmusic_firehose_frames", "Frames received", st.frames if st else 0)
        yield counter("openmusic_firehose_bad_frames", "Frames that were not valid DAG-CBOR events", st.bad_frames if st else 0)
        yield counter("openmusic_firehose_connects", "WebSocket connections opened", st.connects if st else 0)
        yield gauge("openmusic_firehose_last_seq", "Seq of the last event received", (st.last_seq or 0) if st else 0)
        yield gauge("openmusic_firehose_lag_seconds", "Seconds behind the stream's head (last event's time to now of receipt)",
                    (st.lag_s or 0.0) if st else 0.0)
        yield counter("openmusic_events", "Events applied to the database", ix.get("events", 0))
        yield counter("openmusic_records_indexed", "Records indexed (creates and updates)", ix.get("records_indexed", 0))
        yield counter("openmusic_records_deleted", "Records deleted", ix.get("records_deleted", 0))
        rejected = CounterMetricFamily("openmusic_records_rejected", "Records rejected, by reason", labels=["reason"])
        for reason, n in sorted((rt.indexer.rejections if rt.indexer else {}).items()):
            rejected.add_metric([reason], n)
        yield rejected
        commits = CounterMetricFamily("openmusic_commits_verified", "Commit verification results", labels=["result"])
        for result, n in sorted((rt.verifier.counters if rt.verifier else {}).items()):
            commits.add_metric([result], n)
        yield commits
        yield counter("openmusic_commits_stale", "Commits at or below the applied rev (replays)", ix.get("stale_commits", 0))
        yield gauge("openmusic_repos_desynchronized", "Repos owed a resync", self.desynchronized)
        yield counter("openmusic_resyncs", "Repos resynced from a verified getRepo CAR", ix.get("resyncs", 0))
        yield counter("openmusic_resync_failures", "Failed resync attempts", ix.get("resync_failures", 0))


def build(rt: AppViewDeps) -> tuple[CollectorRegistry, RuntimeCollector]:
    """A registry holding the runtime's collector."""
    registry = CollectorRegistry(auto_describe=False)
    collector = RuntimeCollector(rt)
    registry.register(collector)
    return registry, collector


async def render(rt: AppViewDeps, registry: CollectorRegistry, collector: RuntimeCollector) -> bytes:
    """The metrics page; reads the count of desynchronized repos from the database first."""
    cur = await rt.reader.execute("SELECT COUNT(*) FROM repo_state WHERE status = 'desynchronized'")
    collector.desynchronized = (await cur.fetchone())[0]
    return generate_latest(registry)
