"""Alerts: the AlertSink protocol and its sinks (log, webhook, Amazon SNS).

Alerts fire on transitions, decided by the reconciler; this module only
delivers them. Each sink has a worker thread of its own, so a slow or failing
webhook never blocks reconciliation nor another sink; failures are logged and
counted, never raised.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import structlog

from controller import aws, backoff, metrics
from controller.settings import AlertSettings, SnsSettings, WebhookSettings

log = structlog.get_logger("envctl.alerts")


class Event(StrEnum):
    """What an alert is about."""

    DRIFT_DETECTED = "drift_detected"
    DRIFT_CHANGED = "drift_changed"
    DRIFT_PERSISTS = "drift_persists"
    DRIFT_RESOLVED = "drift_resolved"
    APPLY_FAILED = "apply_failed"
    DESTROY_FAILED = "destroy_failed"
    RECOVERED = "recovered"
    INVALID = "environment_invalid"
    ORPHANED = "environment_orphaned"
    DESTROYS_HELD = "destroys_held"
    EXPIRING = "preview_expiring"
    EXPIRED = "preview_expired"
    STALLED = "environment_stalled"
    LOCK_RELEASED = "stale_lock_released"


SEVERITY = {
    Event.DRIFT_DETECTED: "warning",
    Event.DRIFT_CHANGED: "warning",
    Event.DRIFT_PERSISTS: "warning",
    Event.DRIFT_RESOLVED: "info",
    Event.APPLY_FAILED: "error",
    Event.DESTROY_FAILED: "error",
    Event.RECOVERED: "info",
    Event.INVALID: "error",
    Event.ORPHANED: "warning",
    Event.DESTROYS_HELD: "error",
    Event.EXPIRING: "info",
    Event.STALLED: "error",
    Event.LOCK_RELEASED: "warning",
    Event.EXPIRED: "info",
}


def slack_escape(text: str) -> str:
    """Text Slack shows as written: its three control characters as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Alert:
    """One alert about one environment."""

    event: Event
    environment: str
    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def severity(self) -> str:
        return SEVERITY[self.event]

    @property
    def title(self) -> str:
        return f"envctl: {self.event.value.replace('_', ' ')}: {self.environment}"

    def payload(self) -> dict[str, Any]:
        """Slack-compatible `text` plus structured fields."""
        return {
            # Slack reads <...> as links and mentions (<!channel>) and & as an entity: what an
            # environment file put into a message is shown, never interpreted.
            "text": f"*{slack_escape(self.title)}* ({self.severity})\n{slack_escape(self.message)}",
            "event": self.event.value,
            "severity": self.severity,
            "environment": self.environment,
            "kind": self.kind,
            "message": self.message,
            "details": self.details,
            "at": self.at,
        }


class AlertSink(Protocol):
    """Something that delivers alerts; may raise, the manager catches."""

    name: str

    def emit(self, alert: Alert) -> None: ...


class LogSink:
    """Every alert as a structured log event (always on)."""

    name = "log"

    def emit(self, alert: Alert) -> None:
        level = {"error": log.error, "warning": log.warning}.get(alert.severity, log.info)
        level(
            "alert",
            alert_event=alert.event.value,
            env=alert.environment,
            kind=alert.kind,
            message=alert.message,
        )


def redact_url(url: str) -> str:
    """scheme://host/*** — webhook paths and queries are credentials."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/***"


class WebhookSink:
    """A JSON POST per alert, retried with exponential backoff."""

    name = "webhook"

    def __init__(self, settings: WebhookSettings, backoff_seconds: float = 1.0) -> None:
        self.settings = settings
        self.backoff_seconds = backoff_seconds

    def emit(self, alert: Alert) -> None:
        body = json.dumps(alert.payload()).encode()
        last: Exception | None = None
        for attempt in range(1, self.settings.attempts + 1):
            request = urllib.request.Request(  # noqa: S310 - the URL is the operator's http(s) webhook
                self.settings.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.settings.timeout_seconds) as response:  # noqa: S310
                    response.read()
                return
            # Network errors, timeouts and non-2xx answers are retried.
            except (urllib.error.URLError, TimeoutError, OSError) as error:
                last = error
                log.warning(
                    "webhook_attempt_failed",
                    url=redact_url(self.settings.url),
                    attempt=attempt,
                    error=str(error),
                )
                if attempt < self.settings.attempts:
                    time.sleep(backoff.delay(attempt, self.backoff_seconds, jitter=random.random()))  # noqa: S311
        raise RuntimeError(
            f"webhook {redact_url(self.settings.url)} failed {self.settings.attempts} times: {last}"
        )


class SnsSink:
    """An SNS message per alert, with subject and message attributes."""

    name = "sns"

    def __init__(self, settings: SnsSettings) -> None:
        self.settings = settings
        self._client = aws.client("sns", region=settings.region, endpoint=settings.endpoint, read_seconds=10)

    def emit(self, alert: Alert) -> None:
        self._client.publish(
            TopicArn=self.settings.topic_arn,
            Subject=alert.title[:100],
            Message=json.dumps(alert.payload()),
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in (
                    ("environment", alert.environment),
                    ("kind", alert.kind or "unknown"),
                    ("event", alert.event.value),
                    ("severity", alert.severity),
                )
            },
        )


class Alerts:
    """Fans each alert out to every sink, each on its own thread; counts what was sent and failed."""

    def __init__(self, sinks: list[AlertSink]) -> None:
        self.sinks = sinks
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._pools = {
            sink.name: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"alert-{sink.name}")
            for sink in sinks
        }
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: AlertSettings) -> Alerts:
        sinks: list[AlertSink] = [LogSink()]
        if settings.webhook is not None:
            sinks.append(WebhookSink(settings.webhook))
        if settings.sns is not None:
            sinks.append(SnsSink(settings.sns))
        return cls(sinks)

    def emit(self, alert: Alert) -> None:
        """Queue an alert for every sink; returns at once."""
        for sink in self.sinks:
            future = self._pools[sink.name].submit(self._deliver, sink, alert)
            with self._lock:
                self._pending = [f for f in self._pending if not f.done()] + [future]

    def _deliver(self, sink: AlertSink, alert: Alert) -> None:
        # A failing sink is logged and counted; it never reaches the caller or another sink.
        try:
            sink.emit(alert)
        except Exception as error:
            self.failed[sink.name] += 1
            metrics.ALERTS.labels(sink.name, "failed").inc()
            log.error(
                "alert_delivery_failed",
                sink=sink.name,
                alert_event=alert.event.value,
                env=alert.environment,
                error=str(error),
            )
            return
        self.sent[sink.name] += 1
        metrics.ALERTS.labels(sink.name, "sent").inc()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for queued deliveries (tests, shutdown)."""
        with self._lock:
            pending = list(self._pending)
        deadline = time.monotonic() + timeout
        for future in pending:
            future.exception(timeout=max(deadline - time.monotonic(), 0.01))

    def close(self) -> None:
        self.flush()
        for pool in self._pools.values():
            pool.shutdown(wait=True)
