"""Feedback ordering: the outbox is delivered oldest first, and nothing passes an update that waits.

The git host is the one thing faked (a recording target: GitHub and GitLab have their own local
servers in the integration tests); the outbox is the real status store, the clock injected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.feedback import BACKOFF_BASE_SECONDS, Feedback
from controller.hosts import Rejected, Retry, Update
from controller.settings import parse
from controller.store import StatusStore
from controller.types import Phase, Record


class Host:
    """A git host that answers from a script: per delivery, None (taken) or an exception."""

    name = "github"

    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []
        self.script: list[Exception | None] = []

    def deliver(self, update: Update, memory) -> None:
        answer = self.script.pop(0) if self.script else None
        if answer is not None:
            raise answer
        self.shown.append((update.name, update.state))


@pytest.fixture
def world(tmp_path: Path):
    settings = parse(
        {
            "repository": {"url": "/x"},
            "state": {"bucket": "b"},
            "github": {"repository": "acme/shop"},
            "api": {"public_url": "https://envctl.acme.example"},
        },
        "test.yaml",
        tmp_path,
    )
    store = StatusStore(tmp_path / "status.db")
    host = Host()
    now = [1000.0]
    feedback = Feedback(settings, store, [host], clock=lambda: now[0])
    yield feedback, host, store, now
    store.close()


def record(name: str = "pr1", kind: str = "preview") -> Record:
    return Record(name=name, kind=kind, phase=Phase.READY, spec={"pull_request": 1, "commit": "abc1234"})


def states(store: StatusStore) -> list[str]:
    import json

    return [json.loads(item.payload)["state"] for item in store.outbox_pending("github")]


def test_updates_are_delivered_oldest_first(world):
    """Three updates of two environments arrive in the order they were queued."""
    feedback, host, store, _ = world
    feedback.notify(record("pr1"), "in_progress", "applying")
    feedback.notify(record("pr2"), "in_progress", "applying")
    feedback.notify(record("pr1"), "success", "ready")
    assert feedback.deliver_due(host) == 60.0
    assert host.shown == [("pr1", "in_progress"), ("pr2", "in_progress"), ("pr1", "success")]
    assert store.outbox_pending("github") == []


def test_a_failed_update_holds_back_every_later_one_until_its_retry(world):
    """The first update fails (503): the second, due at once, waits behind it; both go after the
    backoff, in order."""
    feedback, host, store, now = world
    host.script = [Retry("unavailable", "503")]
    feedback.notify(record(), "in_progress", "applying")
    feedback.notify(record(), "success", "ready")
    assert feedback.deliver_due(host) == 0.0
    assert host.shown == []
    # Looking again before the retry is due sends nothing, and says how long to wait.
    assert feedback.deliver_due(host) == pytest.approx(BACKOFF_BASE_SECONDS)
    assert host.shown == [] and states(store) == ["in_progress", "success"]
    now[0] += BACKOFF_BASE_SECONDS
    feedback.deliver_due(host)
    assert host.shown == [("pr1", "in_progress"), ("pr1", "success")]


def test_backoff_doubles_per_attempt_and_retry_after_is_honoured(world):
    """Unavailable twice: 5 s then 10 s; a rate limit's Retry-After is the wait, not the backoff."""
    feedback, host, store, now = world
    host.script = [Retry("unavailable", "503"), Retry("unavailable", "503"), Retry("rate_limited", "403", 90)]
    feedback.notify(record(), "in_progress", "applying")
    waits = []
    for _ in range(3):
        feedback.deliver_due(host)
        (item,) = store.outbox_pending("github")
        waits.append(item.next_at - now[0])
        now[0] = item.next_at
    assert waits == [BACKOFF_BASE_SECONDS, 2 * BACKOFF_BASE_SECONDS, 90]
    feedback.deliver_due(host)
    assert host.shown == [("pr1", "in_progress")]


def test_a_rejected_update_is_dropped_and_the_next_goes_on(world):
    """An update the host refuses for good (no such pull request) is dropped; the rest continue."""
    feedback, host, store, _ = world
    host.script = [Rejected("no pull request 1"), None]
    feedback.notify(record(), "in_progress", "applying")
    feedback.notify(record(), "success", "ready")
    feedback.deliver_due(host)
    assert host.shown == [("pr1", "success")]
    assert store.outbox_pending("github") == []


def test_a_crash_in_the_client_is_retried_not_lost(world):
    """An unexpected exception keeps the update, with a backoff, and it is delivered later."""
    feedback, host, store, now = world
    host.script = [ValueError("a client bug")]
    feedback.notify(record(), "in_progress", "applying")
    assert feedback.deliver_due(host) == 0.0
    assert states(store) == ["in_progress"]
    now[0] += BACKOFF_BASE_SECONDS
    feedback.deliver_due(host)
    assert host.shown == [("pr1", "in_progress")]


def test_only_previews_are_reported_with_their_log_and_environment_urls(world):
    """A persistent environment queues nothing (deployments: previews); a success carries the
    log link on the public URL and the stack's environment_url output."""
    feedback, _host, store, _ = world
    feedback.notify(record("staging", kind="persistent"), "success", "ready")
    assert store.outbox_pending("github") == []
    ready = record()
    ready.outputs = {"environment_url": "https://pr1.acme.example"}
    feedback.notify(ready, "success", "ready:\n applied   at abc")
    import json

    (item,) = store.outbox_pending("github")
    update = json.loads(item.payload)
    assert update["log_url"] == "https://envctl.acme.example/environments/pr1"
    assert update["environment_url"] == "https://pr1.acme.example"
    assert update["description"] == "ready: applied at abc"
