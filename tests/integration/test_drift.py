"""Drift checks, repair and alerts, and preview expiry: real Terraform, moto, a recording webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.types import Phase, Reason
from tests.integration.conftest import (
    Aws,
    Hook,
    Repo,
    Topic,
    World,
    build_world,
    make_settings,
    persistent,
    preview,
    tamper,
    write_state,
)


@pytest.fixture
def alerting(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain, demo_worker, hook: Hook, topic: Topic
) -> Iterator[World]:
    """A world whose alerts go to the recording webhook and to SNS on moto."""
    settings = make_settings(
        tmp_path,
        repo,
        aws,
        toolchain,
        alerts={
            "webhook": {"url": hook.url, "timeout_seconds": 2, "attempts": 3},
            "sns": {"topic_arn": topic.arn, "region": "us-east-1", "endpoint": aws.endpoint},
            "realert_hours": 24,
        },
        previews={"expiry_warning": "10m"},
    )
    yield from build_world(settings, repo, aws, demo_worker)


def drop(address_name: str):
    """A state change that removes one resource, as if someone deleted it by hand."""

    def change(state):
        state["resources"] = [r for r in state["resources"] if r["name"] != address_name]

    return change


def test_drift_on_a_preview_is_reported_alerted_once_and_repaired(alerting: World, hook: Hook, topic: Topic):
    """Out-of-band removal: detected, one webhook and one SNS alert, repaired, next check clean."""
    world = alerting
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    key = world.key("pr1")
    tamper(world.aws, key, drop("cluster"))
    assert world.reconciler.check_drift("pr1") == "repaired"
    world.reconciler.alerts.flush()
    detected = [a for a in hook.received if a["event"] == "drift_detected"]
    assert len(detected) == 1
    assert "null_resource.cluster (create)" in detected[0]["text"]
    assert detected[0]["environment"] == "pr1" and detected[0]["kind"] == "preview"
    assert detected[0]["details"]["report"][0]["address"] == "null_resource.cluster"
    sns = [json.loads(m["Message"]) for m in topic.messages(wait=2)]
    assert [m["event"] for m in sns] == ["drift_detected", "drift_resolved"]
    assert {m["MessageAttributes"]["event"]["Value"] for m in topic.messages()} <= {"drift_resolved"}
    assert "cluster" in {r["name"] for r in world.aws.state(key)["resources"]}
    assert world.reconciler.check_drift("pr1") == "in_sync"
    record = world.store.load("pr1")
    assert (record.drift_status, record.reason) == ("InSync", Reason.DRIFT_REPAIRED)
    runs = [(r.action, r.outcome) for r in world.store.runs("pr1")]
    assert runs[:3] == [("drift_check", "in_sync"), ("repair", "succeeded"), ("drift_check", "drifted")]


def test_drift_on_a_persistent_environment_is_alerted_not_repaired(alerting: World, hook: Hook):
    """Persistent: alert only; a second check sends nothing new; fixing it by hand sends 'resolved'."""
    world = alerting
    world.repo.write("staging", persistent())
    world.reconciler.run_pass()
    key = world.key("staging")
    original = tamper(world.aws, key, drop("network"))
    assert world.reconciler.check_drift("staging") == "drifted"
    world.now[0] += 600
    assert world.reconciler.check_drift("staging") == "drifted"
    world.reconciler.alerts.flush()
    assert hook.events() == ["drift_detected"]
    record = world.store.load("staging")
    assert record.drift_status == "Drifted" and record.drift_first_seen == world.now[0] - 600
    assert "network" not in {r["name"] for r in world.aws.state(key)["resources"]}
    # Past realert_hours the same drift is sent again.
    world.now[0] += 25 * 3600
    world.reconciler.check_drift("staging")
    world.reconciler.alerts.flush()
    assert hook.events() == ["drift_detected", "drift_persists"]
    # Someone restores it by hand.
    original["serial"] = world.aws.state(key)["serial"] + 1
    write_state(world.aws, key, original)
    assert world.reconciler.check_drift("staging") == "in_sync"
    world.reconciler.alerts.flush()
    assert hook.events() == ["drift_detected", "drift_persists", "drift_resolved"]


def test_sensitive_values_never_leave_terraform(alerting: World, hook: Hook, topic: Topic, capsys):
    """A sensitive attribute's drift is reported as (sensitive): not in report, alerts, logs or database."""
    import hashlib

    world = alerting
    world.repo.write("pr2", preview(2, credentials=True))
    world.reconciler.run_pass()
    secret = hashlib.sha256(b"envctl-pr2-token").hexdigest()
    tampered = "tampered-" + "9" * 20

    def change(state):
        for resource in state["resources"]:
            if resource["name"] == "credentials":
                resource["instances"][0]["attributes"]["triggers"]["token"] = tampered

    tamper(world.aws, world.key("pr2"), change)
    assert world.reconciler.check_drift("pr2") == "repaired"
    world.reconciler.alerts.flush()
    (entry,) = [e for e in world.store.runs("pr2") if e.action == "drift_check"]
    detected = next(a for a in hook.received if a["event"] == "drift_detected")
    attributes = detected["details"]["report"][0]["attributes"]
    assert {"name": "triggers", "before": "(sensitive)", "after": "(sensitive)"} in attributes
    captured = capsys.readouterr().out
    database = (world.settings.workdir / "status.db").read_bytes()
    for wal in world.settings.workdir.glob("status.db-wal"):
        database += wal.read_bytes()
    sns = json.dumps(topic.messages(wait=2))
    for place, text in (
        ("webhook", json.dumps(hook.received)),
        ("sns", sns),
        ("logs", captured),
        ("runs", entry.message),
    ):
        assert secret not in text, place
        assert tampered not in text, place
    assert secret.encode() not in database and tampered.encode() not in database


def test_a_failed_check_is_not_drift(alerting: World, hook: Hook):
    """With the state bucket gone the check fails: recorded as CheckFailed, no repair, no drift alert."""
    world = alerting
    world.repo.write("pr3", preview(3))
    world.reconciler.run_pass()
    s3 = world.aws.client("s3")
    saved = {key: s3.get_object(Bucket=world.aws.bucket, Key=key)["Body"].read() for key in world.keys("pr3")}
    for key in saved:
        s3.delete_object(Bucket=world.aws.bucket, Key=key)
    s3.delete_bucket(Bucket=world.aws.bucket)
    try:
        assert world.reconciler.check_drift("pr3") == "failed"
    finally:
        s3.create_bucket(Bucket=world.aws.bucket)
        for key, body in saved.items():
            s3.put_object(Bucket=world.aws.bucket, Key=key, Body=body)
    record = world.store.load("pr3")
    assert record.drift_status == "CheckFailed" and record.drift_failures == 1
    assert record.phase is Phase.READY
    assert [r.action for r in world.store.runs("pr3")][:1] == ["drift_check"]
    assert "repair" not in [r.action for r in world.store.runs("pr3")]
    world.reconciler.alerts.flush()
    assert "drift_detected" not in hook.events()
    assert world.reconciler.check_drift("pr3") == "in_sync"


def test_a_failing_webhook_is_retried_and_blocks_nothing(alerting: World, hook: Hook, topic: Topic):
    """A webhook answering 503 twice, slowly: retried until it takes it; the pass and SNS go on."""
    world = alerting
    hook.fail_next = 2
    hook.delay = 0.5
    world.repo.write("pr4", preview(4, fail="no capacity"))
    result = world.reconciler.run_pass()
    passed = time.monotonic()
    assert result.outcomes == {"pr4": "failed"}
    sns = [json.loads(m["Message"])["event"] for m in topic.messages(wait=3)]
    assert sns == ["apply_failed"]
    world.reconciler.alerts.flush()
    assert hook.attempts == 3
    assert hook.events() == ["apply_failed"]
    assert world.reconciler.alerts.sent["webhook"] == 1
    # The pass had returned before the webhook took the alert (its third, slow attempt).
    assert passed < hook.attempted_at[-1]


def test_a_dead_webhook_is_counted_and_sns_still_delivers(alerting: World, hook: Hook, topic: Topic):
    """A webhook that never answers well fails after its attempts; counted; SNS gets the alert."""
    world = alerting
    hook.fail_next = 99
    world.repo.write("pr5", {"kind": "preview"})
    world.reconciler.run_pass()
    world.reconciler.alerts.flush()
    assert world.reconciler.alerts.failed["webhook"] == 1
    assert [json.loads(m["Message"])["event"] for m in topic.messages(wait=2)] == ["environment_invalid"]


def test_preview_ttl_warns_then_expires_while_persistent_stays(alerting: World, hook: Hook):
    """ttl: 1h -> a warning 10 minutes before, then destroyed and Expired; staging of the same age stays."""
    world = alerting
    world.repo.write("staging", persistent())
    world.repo.write("pr6", {**preview(6), "ttl": "1h"})
    committed = float(world.repo.clone.head.commit.committed_date)
    world.now[0] = committed + 60
    assert world.reconciler.run_pass().outcomes == {"pr6": "applied", "staging": "applied"}
    assert world.store.load("pr6").expires_at == committed + 3600
    world.now[0] = committed + 3600 - 300
    world.reconciler.run_pass()
    world.now[0] += 60
    world.reconciler.run_pass()
    world.reconciler.alerts.flush()
    assert hook.events().count("preview_expiring") == 1
    world.now[0] = committed + 3600 + 1
    assert world.reconciler.run_pass().outcomes == {"pr6": "destroyed"}
    record = world.store.load("pr6")
    assert (record.phase, record.reason) == (Phase.DESTROYED, Reason.EXPIRED)
    assert world.aws.objects() == world.keys("staging")
    assert world.reconciler.run_pass().outcomes == {}
    world.reconciler.alerts.flush()
    assert hook.events()[-1] == "preview_expired"
    assert world.phase("staging") == "Ready"
    # A new commit to its file restarts the clock and brings it back.
    world.repo.write("pr6", {**preview(6, revision="2"), "ttl": "1h"})
    world.now[0] = float(world.repo.clone.head.commit.committed_date) + 60
    assert world.reconciler.run_pass().outcomes == {"pr6": "applied"}


def test_a_failing_apply_alerts_once_per_episode_and_once_on_recovery(alerting: World, hook: Hook):
    """Three failed attempts of one apply send one apply_failed; the fix sends one recovered."""
    world = alerting
    world.repo.write("pr1", preview(1, fail="quota exceeded"))
    for _ in range(3):
        assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
        world.now[0] = world.store.load("pr1").next_attempt_at + 1
    world.repo.write("pr1", preview(1))
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
    world.reconciler.alerts.flush()
    assert [a["event"] for a in hook.received] == ["apply_failed", "recovered"]


def test_a_held_batch_sends_one_alert_naming_every_environment(alerting: World, hook: Hook):
    """Six removals over the limit: one destroys_held alert listing all six; a later pass sends none."""
    world = alerting
    names = [f"pr{i}" for i in range(1, 7)]
    for index, name in enumerate(names, start=1):
        world.repo.write(name, preview(index))
    world.repo.write("keep", preview(99))
    world.reconciler.run_pass()
    world.repo.remove(*names)
    world.reconciler.run_pass()
    world.reconciler.run_pass()
    world.reconciler.alerts.flush()
    held = [a for a in hook.received if a["event"] == "destroys_held"]
    assert len(held) == 1
    assert held[0]["details"]["environments"] == names
    assert "max_destroys_per_pass=5" in held[0]["text"]


def test_a_drift_check_asked_while_a_repair_runs_is_skipped_not_run_beside_it(world: World):
    """While the daemon's check repairs pr1 (re-creating a 10 s resource; pr1 stays Ready), a
    check asked through the API's path answers `skipped` at once: never two Terraforms on pr1."""
    import threading

    world.repo.write("pr1", preview(1, sleep_seconds=10))
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
    tamper(world.aws, world.key("pr1"), drop("slow"))
    outcome: list[str] = []
    checking = threading.Thread(target=lambda: outcome.append(world.reconciler.check_drift("pr1")))
    checking.start()
    deadline = time.monotonic() + 120
    while not [r for r in world.store.runs("pr1") if r.action == "repair" and r.finished_at is None]:
        assert time.monotonic() < deadline, "the repair never started"
        time.sleep(0.1)
    assert world.phase("pr1") == "Ready"
    asked = world.actions.drift_report("pr1")
    # Answered while the repair still ran.
    assert [r.finished_at for r in world.store.runs("pr1") if r.action == "repair"] == [None]
    assert asked["checked"]["pr1"]["outcome"] == "skipped"
    checking.join(timeout=120)
    assert outcome == ["repaired"]
    assert [r.action for r in world.store.runs("pr1")] == ["repair", "drift_check", "apply"]


def test_a_check_asked_through_the_api_reports_and_repairs_only_when_told(world: World):
    """A preview with remediation auto, drifted: a check asked for (the API, `envctl drift`)
    reports and applies nothing; `--repair` (repair=True) applies the inspected plan."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    tamper(world.aws, world.key("pr1"), drop("cluster"))
    serial = world.aws.state(world.key("pr1"))["serial"]
    asked = world.actions.drift_report("pr1")
    assert asked["checked"]["pr1"]["outcome"] == "drifted"
    assert world.aws.state(world.key("pr1"))["serial"] == serial
    assert "repair" not in [r.action for r in world.store.runs("pr1")]
    repaired = world.actions.drift_report("pr1", repair=True)
    assert repaired["checked"]["pr1"]["outcome"] == "repaired"
    assert "cluster" in {r["name"] for r in world.aws.state(world.key("pr1"))["resources"]}
