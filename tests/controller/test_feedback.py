"""Feedback ordering: the outbox is delivered oldest first, and nothing passes an update that waits.

The git host is the one thing faked (a recording target: GitHub and GitLab have their own local
servers in the integration tests); the outbox is the real status store, the clock injected.
"""

from __future__ import annotations

from dataclasses import replace
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


class Recording(Host):
    """A host that keeps every update it was shown, whole, and the memory it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[Update] = []
        self.memories: list[object] = []

    def deliver(self, update: Update, memory) -> None:
        super().deliver(update, memory)
        self.updates.append(update)
        self.memories.append(memory)


def counted(target: str, outcome: str) -> float:
    """envctl_feedback_total{target, outcome} as a scrape shows it (this counter's samples alone)."""
    from controller.metrics import FEEDBACK

    return sum(
        sample.value
        for family in FEEDBACK.collect()
        for sample in family.samples
        if sample.name == "envctl_feedback_total" and sample.labels == {"target": target, "outcome": outcome}
    )


def test_what_operators_see_of_each_outcome(world):
    """Each outcome is one log event naming target and environment, and one count by outcome; an
    auth failure is logged once per episode, and again after a delivery succeeded."""
    import structlog

    feedback, host, store, now = world
    before = {o: counted("github", o) for o in ("delivered", "rejected", "unavailable", "auth")}
    host.script = [
        Retry("unavailable", "503"),
        Retry("auth", "401 bad credentials"),
        Retry("auth", "401 bad credentials"),
        None,
        Rejected("no pull request 1"),
        Retry("auth", "401 again"),
    ]
    with structlog.testing.capture_logs() as logs:
        feedback.notify(record(), "in_progress", "applying")
        for _ in range(4):
            feedback.deliver_due(host)
            (item,) = store.outbox_pending("github") or [None]
            if item is not None:
                now[0] = item.next_at
        feedback.notify(record(), "success", "ready")
        feedback.deliver_due(host)
        feedback.notify(record(), "inactive", "destroyed")
        feedback.deliver_due(host)
    events = [(e["event"], e.get("target"), e.get("env"), e.get("log_level")) for e in logs]
    assert events == [
        ("feedback_retry", "github", "pr1", "warning"),
        ("feedback_auth_failed", "github", None, "error"),
        ("feedback_delivered", "github", "pr1", "info"),
        ("feedback_rejected", "github", "pr1", "warning"),
        ("feedback_auth_failed", "github", None, "error"),
    ]
    retry = logs[0]
    assert (retry["reason"], retry["attempts"], retry["retry_in"], retry["error"]) == (
        "unavailable",
        1,
        5.0,
        "503",
    )
    assert (logs[1]["error"], logs[1]["retry_in"]) == ("401 bad credentials", 10.0)
    assert logs[2]["state"] == "in_progress" and logs[3]["error"] == "no pull request 1"
    assert {o: counted("github", o) - before[o] for o in before} == {
        "delivered": 1,
        "rejected": 1,
        "unavailable": 1,
        "auth": 3,
    }


def test_a_crash_is_logged_with_its_traceback_and_counted_as_unavailable(world):
    """A client bug: `feedback_crashed` with the exception, and a retry as `unavailable`."""
    import structlog

    feedback, host, _, _ = world
    before = counted("github", "unavailable")
    host.script = [ValueError("a client bug")]
    feedback.notify(record(), "in_progress", "applying")
    with structlog.testing.capture_logs() as logs:
        assert feedback.deliver_due(host) == 0.0
    crashed, retried = logs
    assert (crashed["event"], crashed["target"], crashed["env"], crashed["exc_info"]) == (
        "feedback_crashed",
        "github",
        "pr1",
        True,
    )
    assert (retried["event"], retried["reason"], retried["error"]) == (
        "feedback_retry",
        "unavailable",
        "ValueError('a client bug')",
    )
    assert counted("github", "unavailable") - before == 1


def test_the_update_carries_the_pull_request_commit_kind_and_urls(world):
    """What the host is shown: name, kind, state, one-line description, pull request, commit, the
    environment URL (success only; else the host's template) and the log link."""
    feedback, _, _, _ = world
    host = Recording()
    ready = record()
    ready.outputs = {"environment_url": "ftp://not-a-web-url"}
    feedback.notify(ready, "success", "ready")
    feedback.notify(record(), "failure", "x" * 200)
    feedback.deliver_due(host)
    success, failure = host.updates
    assert success == Update(
        name="pr1",
        kind="preview",
        state="success",
        description="ready",
        pull_request=1,
        commit="abc1234",
        environment_url="",
        log_url="https://envctl.acme.example/environments/pr1",
    )
    assert failure.environment_url == "" and failure.description == "x" * 139 + "…"


def test_the_kind_comes_from_the_spec_when_the_record_has_none(world):
    """A record without a kind yet (first apply) is reported by its spec's kind; a persistent one
    is not reported unless deployments: all."""
    feedback, _, store, _ = world
    fresh = Record(name="pr2", spec={"kind": "preview", "pull_request": 2})
    feedback.notify(fresh, "in_progress", "applying")
    quiet = Record(name="staging", spec={"kind": "persistent"})
    feedback.notify(quiet, "in_progress", "applying")
    assert [item.name for item in store.outbox_pending("github")] == ["pr2"]


def test_a_host_asking_for_a_long_pause_is_looked_at_again_within_a_minute(world):
    """Retry-After of an hour: the worker sleeps at most 60 s at a time, and delivers on time."""
    feedback, host, _, now = world
    host.script = [Retry("rate_limited", "403", 3600)]
    feedback.notify(record(), "in_progress", "applying")
    assert feedback.deliver_due(host) == 0.0
    assert feedback.deliver_due(host) == 60.0
    now[0] += 3599
    assert feedback.deliver_due(host) == pytest.approx(1.0)
    now[0] += 1
    assert feedback.deliver_due(host) == 60.0
    assert host.shown == [("pr1", "in_progress")]


def test_the_worker_delivers_what_is_queued_and_stops(world, tmp_path):
    """start(): one thread per host delivers as soon as an update is queued; stop() ends it."""
    import threading

    feedback, host, _, _ = world
    shown = threading.Event()
    original = host.deliver

    def deliver(update, memory) -> None:
        original(update, memory)
        shown.set()

    host.deliver = deliver
    feedback.start()
    (thread,) = [t for t in threading.enumerate() if t.name == "feedback-github"]
    assert thread.daemon
    feedback.notify(record(), "in_progress", "applying")
    assert shown.wait(timeout=10)
    feedback.stop(timeout=10)
    assert not thread.is_alive()
    assert host.shown == [("pr1", "in_progress")]


def test_drain_says_whether_the_outbox_emptied(world):
    """drain(): True once everything went out; False when a host keeps failing until the timeout."""
    feedback, host, _, _ = world
    feedback.notify(record(), "in_progress", "applying")
    assert feedback.drain(timeout=5) is True
    host.script = [Retry("unavailable", "503")] * 100
    feedback.notify(record(), "success", "ready")
    assert feedback.drain(timeout=0.3) is False


def test_deployment_ids_are_remembered_on_the_record(world):
    """The host's deployment id, commit and URL go on the environment's record (not on others')."""
    feedback, _, store, _ = world
    store.save(Record(name="pr1"))
    assert feedback.memory.deployment("pr1") == ("", "")
    assert feedback.memory.deployment("nope") == ("", "")
    feedback.memory.remember("pr1", "42", "abc1234", "https://github.com/acme/shop/deployments")
    feedback.memory.remember("gone", "43", "def", "u")
    saved = store.load("pr1")
    assert (saved.deployment_id, saved.deployment_commit, saved.deployment_url) == (
        "42",
        "abc1234",
        "https://github.com/acme/shop/deployments",
    )
    assert feedback.memory.deployment("pr1") == ("42", "abc1234")
    assert store.load("gone") is None


def test_targets_come_from_the_settings(tmp_path):
    """GitHub and GitLab settings make one target each, named for their outbox; none, none."""
    from controller.settings import Secrets

    store = StatusStore(tmp_path / "s.db")
    base = {"repository": {"url": "/x"}, "state": {"bucket": "b"}}
    both = parse(
        {**base, "github": {"repository": "acme/shop"}, "gitlab": {"project": "acme/shop"}},
        "t.yaml",
        tmp_path,
    )
    both = replace(both, secrets=Secrets(github_token="ghp_x", gitlab_token="glpat_x"))
    assert [t.name for t in Feedback.from_settings(both, store).targets] == ["github", "gitlab"]
    assert Feedback.from_settings(parse(base, "t.yaml", tmp_path), store).targets == []
    gitlab = parse(
        {**base, "gitlab": {"project": "acme/shop", "url_template": "https://{name}.x"}}, "t.yaml", tmp_path
    )
    only = Feedback(gitlab, store, [])
    assert only.host("gitlab") is gitlab.gitlab and only.host("github") is None
    assert only.environment_url(record(), "gitlab") == "https://pr1.x"
    assert only.environment_url(record(), "github") == ""
    assert only.log_url("pr1") == ""
    store.close()


def test_descriptions_up_to_githubs_limit_are_kept_whole():
    """140 characters stay as they are; 141 are cut to 139 and an ellipsis."""
    from controller.feedback import one_line

    assert one_line("y" * 140) == "y" * 140
    assert one_line("y" * 141) == "y" * 139 + "…"


def test_urls_for_the_host_the_update_goes_to(tmp_path):
    """A success links the stack's http(s) environment_url, else the target's own url_template;
    a failure links none; the log link has no double slash; with no API, no log link."""
    store = StatusStore(tmp_path / "s.db")
    settings = parse(
        {
            "repository": {"url": "/x"},
            "state": {"bucket": "b"},
            "github": {"repository": "acme/shop", "url_template": "https://{name}.gh.example"},
            "gitlab": {
                "project": "acme/shop",
                "url_template": "https://{name}.gl.example",
                "deployments": "all",
            },
            "api": {"public_url": "https://envctl.acme.example/"},
        },
        "t.yaml",
        tmp_path,
    )
    github, gitlab = Recording(), Recording()
    gitlab.name = "gitlab"
    feedback = Feedback(settings, store, [github, gitlab])
    plain = record()
    served = record()
    served.outputs = {"environment_url": "http://pr1.internal"}
    feedback.notify(plain, "success", "ready")
    feedback.notify(served, "success", "ready")
    feedback.notify(served, "failure", "boom")
    feedback.deliver_due(github)
    feedback.deliver_due(gitlab)
    assert [u.environment_url for u in github.updates] == [
        "https://pr1.gh.example",
        "http://pr1.internal",
        "",
    ]
    assert [u.environment_url for u in gitlab.updates] == [
        "https://pr1.gl.example",
        "http://pr1.internal",
        "",
    ]
    assert github.updates[0].log_url == "https://envctl.acme.example/environments/pr1"
    assert github.memories == [feedback.memory] * 3
    # deployments: all on GitLab only: a persistent environment goes there, not to GitHub.
    feedback.notify(record("staging", kind="persistent"), "success", "ready")
    assert [item.name for item in store.outbox_pending("github")] == []
    assert [item.name for item in store.outbox_pending("gitlab")] == ["staging"]
    no_api = Feedback(
        parse({"repository": {"url": "/x"}, "state": {"bucket": "b"}, "api": None}, "t.yaml", tmp_path),
        store,
        [],
    )
    assert no_api.log_url("pr1") == ""
    # Without a commit on the spec, none is sent.
    feedback.notify(Record(name="pr3", kind="preview", spec={"pull_request": 3}), "in_progress", "applying")
    feedback.deliver_due(github)
    assert github.updates[-1].commit == ""
    # A public URL with a path keeps it, whatever it ends with.
    pathed = parse(
        {
            "repository": {"url": "/x"},
            "state": {"bucket": "b"},
            "api": {"public_url": "https://ex.com/teamX/"},
        },
        "t.yaml",
        tmp_path,
    )
    assert Feedback(pathed, store, []).log_url("pr1") == "https://ex.com/teamX/environments/pr1"
    store.close()


def test_retry_delays_are_logged_to_a_tenth_of_a_second(world):
    """A host's Retry-After of 12.345 s is logged as 12.3 (auth and other failures alike)."""
    import structlog

    feedback, host, _, now = world
    host.script = [Retry("rate_limited", "403", 12.345), Retry("auth", "401", 7.25)]
    feedback.notify(record(), "in_progress", "applying")
    with structlog.testing.capture_logs() as logs:
        feedback.deliver_due(host)
        now[0] += 13
        feedback.deliver_due(host)
    assert [e["retry_in"] for e in logs] == [12.3, 7.2]


def test_a_stopped_worker_delivers_nothing_more(world):
    """After stop(), deliver_due looks at nothing and asks to be called again at once."""
    feedback, host, store, _ = world
    feedback.notify(record(), "in_progress", "applying")
    feedback.stop(timeout=1)
    assert feedback.deliver_due(host) == 0.0
    assert host.shown == [] and len(store.outbox_pending("github")) == 1


def test_targets_get_their_tokens_and_the_feedback_its_store(tmp_path):
    """from_settings hands each target its token, and the feedback the settings and store given."""
    from controller.settings import Secrets

    store = StatusStore(tmp_path / "s.db")
    base = {"repository": {"url": "/x"}, "state": {"bucket": "b"}}
    both = parse(
        {**base, "github": {"repository": "acme/shop"}, "gitlab": {"project": "acme/shop"}},
        "t.yaml",
        tmp_path,
    )
    both = replace(both, secrets=Secrets(github_token="ghp_x", gitlab_token="glpat_x"))
    feedback = Feedback.from_settings(both, store)
    github, gitlab = feedback.targets
    assert (github.token, gitlab.client.private_token) == ("ghp_x", "glpat_x")
    assert feedback.settings is both and feedback.store is store
    store.close()


def test_backoff_stops_growing_at_its_cap(world):
    """After many failed deliveries the wait stays at the cap (10 minutes), never more."""
    from controller.feedback import BACKOFF_MAX_SECONDS

    feedback, host, store, now = world
    host.script = [Retry("unavailable", "503")] * 10
    feedback.notify(record(), "in_progress", "applying")
    waits = []
    for _ in range(10):
        feedback.deliver_due(host)
        (item,) = store.outbox_pending("github")
        waits.append(item.next_at - now[0])
        now[0] = item.next_at
    assert waits[-3:] == [BACKOFF_MAX_SECONDS] * 3
