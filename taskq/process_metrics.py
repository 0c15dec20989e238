"""The standard collectors every taskq ``/metrics`` carries, beside its own series.

Each API replica and each worker has its own :class:`~prometheus_client.CollectorRegistry`
(no multiprocess mode), so the default registry's ``process_*``, ``python_info`` and
``python_gc_*`` series are not there unless registered: :func:`add_standard_collectors`
puts prometheus_client's own collectors on a registry. ``*_created`` series (one per
counter and histogram child, the time it was first used) are switched off: Prometheus
computes rates without them and they doubled the series count.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

disable_created_metrics()  # type: ignore[no-untyped-call]


def add_standard_collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """Register the process, platform and GC collectors on ``registry``; return it."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
