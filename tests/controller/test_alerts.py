"""Alert payloads, URL redaction, and delivery isolation between sinks."""

from __future__ import annotations

import threading

from controller.alerts import Alert, Alerts, Event, LogSink, redact_url


def test_payload_is_slack_compatible_with_structured_fields():
    """`text` carries a readable line; the rest is structured for machines."""
    alert = Alert(Event.DRIFT_DETECTED, "pr7", "preview", "null_resource.a (create)", {"report": []}, at=5.0)
    payload = alert.payload()
    assert payload["text"] == "*envctl: drift detected: pr7* (warning)\nnull_resource.a (create)"
    assert (payload["event"], payload["environment"], payload["kind"], payload["severity"]) == (
        "drift_detected",
        "pr7",
        "preview",
        "warning",
    )
    assert payload["details"] == {"report": []} and payload["at"] == 5.0


def test_webhook_urls_are_redacted_to_scheme_and_host():
    """The secret path and query of a webhook URL never reach the logs."""
    assert (
        redact_url("https://hooks.example.com/services/T000/B000/XXXX?x=1") == "https://hooks.example.com/***"
    )
    assert redact_url("http://127.0.0.1:8080/secret") == "http://127.0.0.1:8080/***"


class Broken:
    name = "broken"

    def emit(self, alert: Alert) -> None:
        raise RuntimeError("down")


class Slow:
    name = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.release.wait(10)
        self.got.append(alert)


class Quick:
    name = "quick"

    def __init__(self) -> None:
        self.got: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.got.append(alert)


def test_a_failing_or_slow_sink_blocks_neither_caller_nor_other_sinks():
    """emit returns at once; the quick sink delivers while the slow one waits; failures are counted."""
    slow, quick = Slow(), Quick()
    alerts = Alerts([LogSink(), Broken(), slow, quick])
    alert = Alert(Event.APPLY_FAILED, "pr1", "preview", "boom")
    alerts.emit(alert)
    for _ in range(100):
        if quick.got:
            break
        threading.Event().wait(0.05)
    assert quick.got == [alert] and slow.got == []
    slow.release.set()
    alerts.close()
    assert slow.got == [alert]
    assert alerts.failed["broken"] == 1
    assert alerts.sent == {"log": 1, "slow": 1, "quick": 1}


def test_slack_text_shows_what_a_file_wrote_without_interpreting_it():
    """`<!channel>`, links and `&` from an environment's message reach Slack as text."""
    from controller.alerts import Alert, Event

    alert = Alert(Event.INVALID, "pr7", "preview", "kind: '<!channel> <https://evil.example|click> & co'")
    assert alert.payload()["text"] == (
        "*envctl: environment invalid: pr7* (error)\n"
        "kind: '&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; co'"
    )
    assert alert.payload()["message"] == alert.message  # the structured field stays as it was
