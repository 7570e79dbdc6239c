"""One run, one write: what a run writes, the preflight every run goes through, and the queue's timers.

Counted and asserted on the real SQLite store, the bucket and the runs' rows;
timed behaviour is asserted with ordering (a one-hour poll, so no pass runs in
between), never with wall-clock limits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import structlog

from controller.scheduler import Daemon
from controller.types import Phase, Reason
from tests.integration.conftest import World, build_world, make_settings, persistent, preview


def wait_until(predicate, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def count_writes(world: World) -> sqlite3.Connection:
    """SQLite triggers counting every write of a record and every run row, per environment."""
    db = sqlite3.connect(world.store.path, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS counted (what TEXT, name TEXT);
        CREATE TRIGGER IF NOT EXISTS record_inserted AFTER INSERT ON environments
            BEGIN INSERT INTO counted VALUES ('record', NEW.name); END;
        CREATE TRIGGER IF NOT EXISTS record_updated AFTER UPDATE ON environments
            BEGIN INSERT INTO counted VALUES ('record', NEW.name); END;
        CREATE TRIGGER IF NOT EXISTS run_inserted AFTER INSERT ON runs
            BEGIN INSERT INTO counted VALUES ('run', NEW.name); END;
        """
    )
    return db


def counted(db: sqlite3.Connection, name: str) -> dict[str, int]:
    rows = db.execute("SELECT what, COUNT(*) FROM counted WHERE name = ? GROUP BY what", (name,)).fetchall()
    return dict(rows)


def test_one_apply_writes_its_record_once_and_one_run_row(world: World):
    """A new preview's apply: one record write (the outcome, with the run row's result in the same
    transaction) and one run row, while status showed it Applying meanwhile."""
    db = count_writes(world)
    world.repo.write("pr1", preview(1, sleep_seconds=3))
    world.reconciler.run_pass(wait=False)
    # Shown as applying from its run row; nothing of the record written yet.
    wait_until(lambda: world.phase("pr1") == "Applying")
    assert counted(db, "pr1") == {"run": 1}
    world.reconciler.queue.wait(["pr1"])
    assert world.phase("pr1") == "Ready"
    assert counted(db, "pr1") == {"record": 1, "run": 1}
    (run,) = world.store.runs("pr1")
    assert (run.action, run.outcome) == ("apply", "succeeded")
    # The phase history still shows both steps.
    assert [h["phase"] for h in world.store.history("pr1")] == ["Ready", "Applying"]


def test_a_failed_apply_writes_its_record_once_too(world: World):
    """A failing apply: one record write carrying the failure, its backoff and the attempted digest."""
    db = count_writes(world)
    world.repo.write("pr1", preview(1, fail="boom"))
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    assert counted(db, "pr1") == {"record": 1, "run": 1}
    record = world.store.load("pr1")
    assert (record.phase, record.reason, record.failures) == (Phase.FAILED, Reason.APPLY_FAILED, 1)
    assert record.attempted_digest and record.next_attempt_at > world.now[0]


def test_an_errored_state_is_pushed_before_a_drift_check_plans(world: World):
    """A state an interrupted apply could not upload (kept in S3) is pushed before a drift check
    plans against the older one, as before an apply."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    key = world.settings.state.key("pr1")
    newer = world.aws.state(key)
    newer["serial"] += 1
    s3 = world.aws.client("s3")
    errored = world.settings.state.errored_state_key("pr1")
    s3.put_object(Bucket=world.aws.bucket, Key=errored, Body=json.dumps(newer).encode())
    with structlog.testing.capture_logs() as logs:
        assert world.reconciler.check_drift("pr1") == "in_sync"
    events = [e["event"] for e in logs]
    plans = [i for i, e in enumerate(logs) if e["event"] == "terraform_exited" and e.get("command") == "plan"]
    assert events.index("errored_state_pushed") < plans[0]
    assert errored not in world.aws.objects()
    assert world.aws.state(key)["serial"] >= newer["serial"]


def test_a_foreign_repositorys_ownership_stalls_a_drift_check(world: World):
    """An inventory entry naming another repository stalls a drift check before Terraform runs."""
    world.repo.write("staging", persistent())
    world.reconciler.run_pass()
    entry = world.reconciler.parts.state.read_inventory("staging")
    assert isinstance(entry, dict)
    entry["source"] = {"url": "https://git.example.com/other.git", "branch": "main", "path": "envs"}
    world.reconciler.parts.state.write_inventory("staging", entry)
    started = world.reconciler.terraform.processes_started
    assert world.reconciler.check_drift("staging") == "failed"
    record = world.store.load("staging")
    assert (record.phase, record.reason) == (Phase.STALLED, Reason.OWNED_ELSEWHERE)
    assert world.reconciler.terraform.processes_started == started


def ticking(world: World) -> threading.Event:
    """The world's clock follows the wall clock until the returned event is set."""
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            world.now[0] = time.time()
            time.sleep(0.05)

    world.now[0] = time.time()
    threading.Thread(target=tick, daemon=True).start()
    return stop


def test_an_expiry_and_a_drift_check_fire_at_their_time_without_a_pass(
    tmp_path, repo, aws, toolchain, demo_worker
):
    """With a one-hour poll: a drift check runs at its interval and a preview is destroyed when its
    TTL ends, each from the queue's timer; no pass runs after the first."""
    settings = make_settings(
        tmp_path,
        repo,
        aws,
        toolchain,
        drift={"interval_minutes": 0.05, "jitter_fraction": 0},
        previews={"expiry_warning": "1s"},
    )
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    stop = ticking(world)
    daemon = Daemon(world.reconciler, poll_seconds=3600)
    try:
        world.repo.write("staging", persistent())
        world.repo.write("pr1", {**preview(1), "ttl": "15s"})
        daemon.start()
        wait_until(lambda: world.phase("pr1") == "Ready" and world.phase("staging") == "Ready")
        fetched = world.store.get_meta("last_fetch_at")
        wait_until(lambda: any(r.action == "drift_check" for r in world.store.runs("staging")))
        wait_until(lambda: world.phase("pr1") == "Destroyed")
        record = world.store.load("pr1")
        assert record.reason == Reason.EXPIRED
        # The only pass was the first one: the check and the expiry came from timers.
        assert world.store.get_meta("last_fetch_at") == fetched
    finally:
        daemon.shutdown()
        stop.set()
        next(worlds, None)
