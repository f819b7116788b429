"""Readiness (Redis, store, live workers; cached a few seconds) and Prometheus metrics read from Redis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from core.jobs import KINDS, STATUSES
from core.queues import live_workers, queue_names
from service.deps import Services

log = logging.getLogger(__name__)


class Readiness:
    """``check() -> (ready, {"redis"|"storage"|"workers": "ok" or what is wrong})``, reused for cache_s."""

    def __init__(self, svc: Services):
        self.svc = svc
        self._lock = threading.Lock()
        self._cached: tuple[float, bool, dict[str, str]] | None = None

    def check(self) -> tuple[bool, dict[str, str]]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.svc.settings.readiness_cache_s:
                return self._cached[1], self._cached[2]
            checks = self._run()
            ready = all(v == "ok" for v in checks.values())
            self._cached = (time.monotonic(), ready, checks)
            return ready, checks

    def _run(self) -> dict[str, str]:
        checks = {}
        try:
            self.svc.redis.ping()
            checks["redis"] = "ok"
        except Exception as e:
            checks["redis"] = f"unreachable: {e}"
        try:
            self.svc.blobs.ping()
            checks["storage"] = "ok"
        except Exception as e:
            checks["storage"] = f"unavailable: {e}"
        if checks["redis"] != "ok":
            checks["workers"] = "unknown: the broker is unreachable"
            return checks
        try:
            workers = live_workers(self.svc.celery, self.svc.settings.worker_ping_timeout_s)
            checks["workers"] = "ok" if workers else "no worker answered a ping; start one"
        except Exception as e:
            checks["workers"] = f"ping failed: {e}"
        if checks != {"redis": "ok", "storage": "ok", "workers": "ok"}:
            log.warning("not ready: %s", checks)
        return checks


class JobCollector(Collector):
    """Read at each scrape: job records by kind and status, the duration histogram, the queues' lengths."""

    def __init__(self, svc: Services):
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        counts = self.svc.jobs.counts()
        jobs = GaugeMetricFamily(
            "gendef_jobs", "Job records in Redis by kind and status", labels=["kind", "status"]
        )
        for kind in KINDS:
            for status in STATUSES:
                jobs.add_metric([kind, status], counts.get((kind, status), 0))
        yield jobs

        duration = HistogramMetricFamily(
            "gendef_job_duration_seconds",
            "Time from a worker starting a job to its end, by kind and final status",
            labels=["kind", "status"],
        )
        for (kind, status), (buckets, total) in sorted(self.svc.jobs.durations().items()):
            duration.add_metric([kind, status], buckets, total)
        yield duration

        depth = GaugeMetricFamily(
            "gendef_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"]
        )
        for name in queue_names(self.svc.settings):
            depth.add_metric([name], self.svc.redis.llen(name))
        yield depth


def metrics_registry(svc: Services) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobCollector(svc))
    return registry
