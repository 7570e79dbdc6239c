"""Prometheus metrics of one envctl process, in a registry of its own.

Counters and histograms are updated where things happen (passes, Terraform
runs, alerts); gauges that describe the fleet are computed from the status
store at scrape time, so they can never drift from what `envctl status` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.types import Phase

REGISTRY = CollectorRegistry(auto_describe=True)
PASSES = Counter("envctl_reconcile_passes_total", "Reconcile passes by result", ["result"], registry=REGISTRY)
PASS_SECONDS = Histogram(
    "envctl_reconcile_pass_duration_seconds",
    "Duration of reconcile passes",
    registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
)
TERRAFORM_RUNS = Counter(
    "envctl_terraform_runs_total",
    "Terraform processes by command and outcome",
    ["command", "outcome"],
    registry=REGISTRY,
)
TERRAFORM_SECONDS = Histogram(
    "envctl_terraform_run_duration_seconds",
    "Duration of Terraform processes",
    ["command"],
    registry=REGISTRY,
    buckets=(0.5, 1, 5, 15, 60, 300, 900, 1800, 3600),
)
ALERTS = Counter(
    "envctl_alerts_total", "Alert deliveries by sink and outcome", ["sink", "outcome"], registry=REGISTRY
)
API_REFUSED = Counter(
    "envctl_api_refused_total",
    "Connections answered 503 at once because every API handler was busy",
    registry=REGISTRY,
)
FEEDBACK = Counter(
    "envctl_feedback_total",
    "Updates for GitHub/GitLab by target and outcome (delivered, rejected, unavailable, rate_limited, auth)",
    ["target", "outcome"],
    registry=REGISTRY,
)
FORWARD_FAILURES = Counter(
    "envctl_forward_to_leader_failures_total",
    "Requests a follower could not hand to the leader",
    registry=REGISTRY,
)


Snapshot = Callable[[], tuple[dict[str, int], int, float | None]]


class StoreCollector(Collector):
    """Environments by phase, drifted environments, seconds since the last good fetch."""

    def __init__(self) -> None:
        self.source: Snapshot | None = None
        """Set by the API to read the status store; no source, no fleet gauges."""

    def collect(self) -> Iterator[Any]:
        if self.source is None:
            return
        phases, drifted, last_fetch = self.source()
        by_phase = GaugeMetricFamily("envctl_environments", "Environments by phase", labels=["phase"])
        for phase in Phase:
            by_phase.add_metric([phase.value], phases.get(phase.value, 0))
        yield by_phase
        yield GaugeMetricFamily(
            "envctl_environments_drifted", "Environments whose last check found drift", value=drifted
        )
        since = GaugeMetricFamily(
            "envctl_seconds_since_last_fetch", "Seconds since the environments repository was last fetched"
        )
        if last_fetch is not None:
            since.add_metric([], max(time.time() - last_fetch, 0.0))
        yield since


STORE = StoreCollector()
REGISTRY.register(STORE)


def render() -> bytes:
    return generate_latest(REGISTRY)
