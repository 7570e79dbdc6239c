"""Every environment converges on its own: passes decide and queue; no one waits for a slow apply.

Asserted with records and run timestamps, never with wall-clock limits.
"""

from __future__ import annotations

import time
from dataclasses import replace

import structlog

from controller.types import Phase, Reason
from tests.integration.conftest import World, preview


def wait_until(predicate, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def runs(world: World, name: str, action: str = "apply"):
    return sorted((r for r in world.store.runs(name, limit=100) if r.action == action), key=lambda r: r.id)


def test_a_new_environment_is_applied_while_another_is_still_applying(world: World):
    """A slow apply of A runs; B, committed after it started, is Ready before A's apply ends."""
    world.repo.write("pra", preview(1, sleep_seconds=30))
    assert world.reconciler.run_pass(wait=False).outcomes == {"pra": "queued"}
    wait_until(lambda: world.phase("pra") == "Applying")
    world.repo.write("prb", preview(2))
    world.reconciler.run_pass(wait=False)
    wait_until(lambda: world.phase("prb") == "Ready")
    assert world.phase("pra") == "Applying"
    world.reconciler.queue.wait(["pra"])
    (a_run,) = runs(world, "pra")
    (b_run,) = runs(world, "prb")
    assert a_run.started_at < b_run.started_at
    assert b_run.finished_at is not None and a_run.finished_at is not None
    assert b_run.finished_at < a_run.finished_at
    assert world.phase("pra") == "Ready"


def test_five_commits_during_an_apply_give_exactly_one_more_apply_with_the_last_content(world: World):
    """Passes during A's slow apply replace A's waiting item; one follow-up apply, of the last commit."""
    world.repo.write("pra", preview(1, sleep_seconds=15))
    world.reconciler.run_pass(wait=False)
    wait_until(lambda: world.phase("pra") == "Applying")
    for index in range(5):
        world.repo.write("pra", preview(1, sleep_seconds=1, revision=f"commit-{index}"))
        world.reconciler.run_pass(wait=False)
    last = world.repo.clone.head.commit.hexsha
    world.reconciler.queue.wait(["pra"])
    # A pass after everything settled finds nothing to do.
    assert world.reconciler.run_pass().outcomes == {}
    applies = runs(world, "pra")
    assert len(applies) == 2
    assert applies[1].revision == last
    record = world.store.load("pra")
    assert (record.phase, record.applied_revision) == (Phase.READY, last)


def test_a_drift_check_due_during_an_apply_runs_after_it(world: World):
    """A drift check queued while A applies starts only after A's apply has finished."""
    world.repo.write("pra", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pra", preview(1, sleep_seconds=6, revision="2"))
    world.reconciler.run_pass(wait=False)
    wait_until(lambda: world.phase("pra") == "Applying")
    world.reconciler.queue_drift_check("pra")
    world.reconciler.queue.wait(["pra"])
    wait_until(lambda: runs(world, "pra", "drift_check") != [])
    world.reconciler.queue.wait(["pra"])
    apply_run = runs(world, "pra")[-1]
    (check,) = runs(world, "pra", "drift_check")
    assert apply_run.finished_at is not None and check.started_at >= apply_run.finished_at
    assert check.outcome == "in_sync"


def test_an_exception_in_one_environment_stays_with_it(world: World):
    """A stack crash (RuntimeError) fails that environment with backoff and a traceback; others converge."""
    world.repo.write("pr1", preview(1, crash=True))
    world.repo.write("pr2", preview(2))
    with structlog.testing.capture_logs() as logs:
        outcomes = world.reconciler.run_pass().outcomes
    assert outcomes == {"pr1": "failed", "pr2": "applied"}
    record = world.store.load("pr1")
    assert (record.phase, record.reason) == (Phase.FAILED, Reason.APPLY_FAILED)
    assert record.next_attempt_at > world.now[0]
    assert "RuntimeError: the demo stack crashed, as asked" in record.message
    (crash,) = [e for e in logs if e["event"] == "synth_crashed"]
    assert "Traceback" in crash["traceback"] and "RuntimeError" in crash["traceback"]
    assert world.phase("pr2") == "Ready"
    # Still running: a later pass works on.
    world.repo.write("pr3", preview(3))
    assert world.reconciler.run_pass().outcomes == {"pr3": "applied"}


def test_sigterm_interrupts_every_running_apply_at_once_and_the_next_start_resumes(
    tmp_path, repo, aws, toolchain
):
    """Three slow applies at SIGTERM: all three get SIGINT together, locks are released, a restart applies."""
    from tests.integration.test_cli import envctl, raw_settings, setup, status, write_config
    from tests.integration.test_daemon import start_daemon, stop_daemon
    from tests.integration.test_leader import logged

    settings, _ = setup(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["terraform"]["concurrency"] = 3
    config = write_config(tmp_path, raw)
    for pr in (1, 2, 3):
        repo.write(f"pr{pr}", preview(pr, sleep_seconds=60))
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    try:
        wait_until(lambda: log.read_text().count("null_resource.slow: Creating...") == 3)
    finally:
        stop_daemon(proc, log)
    assert proc.returncode == 0, log.read_text()[-3000:]
    sent = logged(log, "terraform_interrupt_sent")
    assert len(sent) == 3
    exits = [e for e in logged(log, "terraform_exited") if e.get("command") == "apply"]
    # Every SIGINT went out before the first interrupted Terraform had even exited.
    assert max(e["timestamp"] for e in sent) <= min(e["timestamp"] for e in exits)
    assert [i for i in aws.lock_items() if not i["LockID"]["S"].endswith("-md5")] == []
    assert {row["reason"] for row in status(config).values()} == {"Interrupted"}
    for pr in (1, 2, 3):
        repo.write(f"pr{pr}", preview(pr, sleep_seconds=1))
    result = envctl("reconcile", config=config)
    assert result.returncode == 0, result.stdout[-3000:]
    assert {row["phase"] for row in status(config).values()} == {"Ready"}


def test_four_slow_environments_fill_four_slots_and_a_fifth_waits_its_turn(
    tmp_path, repo, aws, toolchain, demo_worker
):
    """Concurrency 4: four slow applies run together; the fifth starts when a slot frees, not at a pass."""
    from tests.integration.conftest import build_world, make_settings

    settings = make_settings(tmp_path, repo, aws, toolchain, terraform={"concurrency": 4})
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    try:
        for pr in range(1, 6):
            world.repo.write(f"pr{pr}", preview(pr, sleep_seconds=8 if pr < 5 else 1))
        assert set(world.reconciler.run_pass(wait=False).outcomes.values()) == {"queued"}
        wait_until(lambda: sum(bool(runs(world, f"pr{pr}")) for pr in range(1, 6)) == 4)
        first_four = {f"pr{pr}" for pr in range(1, 6) if runs(world, f"pr{pr}")}
        (fifth,) = {f"pr{pr}" for pr in range(1, 6)} - first_four
        world.reconciler.queue.wait([f"pr{pr}" for pr in range(1, 6)])
        (late,) = runs(world, fifth)
        assert late.started_at >= min(runs(world, name)[0].finished_at for name in first_four)
        assert {world.phase(f"pr{pr}") for pr in range(1, 6)} == {"Ready"}
    finally:
        next(worlds, None)


def test_a_backoff_retry_fires_at_its_own_time_not_at_the_next_poll(
    tmp_path, repo, aws, toolchain, demo_worker
):
    """With a one-hour poll, a failed apply is retried when its backoff ends (a timed wake-up)."""
    import threading

    from controller.scheduler import Daemon
    from tests.integration.conftest import build_world, make_settings

    settings = make_settings(tmp_path, repo, aws, toolchain, retry={"base_seconds": 2, "max_seconds": 4})
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    ticking = threading.Event()

    def tick() -> None:
        while not ticking.is_set():
            world.now[0] = time.time()
            time.sleep(0.05)

    threading.Thread(target=tick, daemon=True).start()
    daemon = Daemon(world.reconciler, poll_seconds=3600)
    try:
        world.repo.write("pr1", preview(1, fail="still broken"))
        daemon.start()
        # The poll job ran once, at start; without a timed wake-up there would be no second run.
        wait_until(lambda: len(runs(world, "pr1")) >= 2, timeout=60)
        first, second = runs(world, "pr1")[:2]
        assert first.finished_at is not None and second.started_at >= first.finished_at
    finally:
        daemon.shutdown()
        ticking.set()
        next(worlds, None)


def test_a_failing_apply_that_outlasts_several_polls_is_retried_only_after_its_backoff(world: World):
    """Passes during a failing 6 s apply queue nothing; the retry starts only once the backoff has passed."""
    world.repo.write("pr1", preview(1, sleep_seconds=6, fail="boom"))
    world.reconciler.run_pass(wait=False)
    wait_until(lambda: world.phase("pr1") == "Applying")
    # Three polls while the apply runs: its outcome is unknown, so none of them queues a second run.
    for _ in range(3):
        result = world.reconciler.run_pass(wait=False)
        assert result.outcomes == {}
        assert [a.reason for a in result.actions] == [Reason.IN_PROGRESS]
    world.reconciler.queue.wait(["pr1"])
    record = world.store.load("pr1")
    assert (record.phase, record.failures) == (Phase.FAILED, 1)
    # jitter 1.0: the first backoff is the configured base (30 s).
    assert record.next_attempt_at == world.now[0] + world.settings.retry.base_seconds
    # Polls inside the backoff start nothing.
    world.now[0] += world.settings.retry.base_seconds - 1
    assert world.reconciler.run_pass().outcomes == {}
    assert len(runs(world, "pr1")) == 1
    # Once it has passed, the next poll retries.
    world.now[0] += 2
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    assert len(runs(world, "pr1")) == 2


def test_a_decision_queued_before_a_failure_waits_for_the_backoff(world: World):
    """An apply queued behind a run of the same content does not start when that run fails: it waits."""
    world.repo.write("pr1", preview(1, sleep_seconds=4, fail="boom"))
    revision = world.reconciler.source.fetch()
    actions, _ = world.reconciler.decide(revision)
    from controller.reconciler import Work

    # Two passes decided before the run began (both saw no record): both queue the same apply.
    world.reconciler.queue.put("pr1", Work(actions[0], revision))
    wait_until(lambda: world.phase("pr1") == "Applying")
    world.reconciler.queue.put("pr1", Work(actions[0], revision))
    world.reconciler.queue.wait(["pr1"])
    assert len(runs(world, "pr1")) == 1
    assert world.phase("pr1") == "Failed"


def test_three_plans_of_one_environment_get_three_answers_within_the_slots(world: World):
    """Three plans of pr1 at once: three whole, separate answers (one summary each, no shared
    directory), one plan of pr1 at a time (so one Terraform), nothing left on disk."""
    import threading

    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    # A change to plan: every resource's triggers change.
    env = replace(world.actions.known("pr1"), parameters={"revision": "2"})
    most = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            most[0] = max(most[0], world.reconciler.terraform.running())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    answers: list[dict] = []
    plans = [threading.Thread(target=lambda: answers.append(world.actions.plan(env))) for _ in range(3)]
    for plan in plans:
        plan.start()
    for plan in plans:
        plan.join(timeout=300)
    done.set()
    assert len(answers) == 3
    for answer in answers:
        assert answer["summary"] == "Plan: 6 to add, 0 to change, 6 to destroy."
        assert answer["text"].count("Plan: ") == 1
    assert most[0] == 1
    assert list((world.settings.workdir / "plans").iterdir()) == []


def test_plans_beyond_the_waiting_bound_are_told_to_come_back(world: World):
    """With every waiting place taken, a plan asked through the API is 429 with Retry-After, at
    once, and no Terraform starts."""
    import json
    import urllib.error
    import urllib.request

    from controller.api import Api
    from controller.settings import ApiSettings

    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.actions.plans_waiting_limit = 0
    api = Api(
        ApiSettings(port=0),
        world.store,
        refresh=lambda: None,
        rows=world.store.rows,
        webhook_secret=None,
        actions=world.actions,
    )
    api.start()
    started = world.reconciler.terraform.processes_started
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{api.port}/api/environments/pr1/plan",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
        except urllib.error.HTTPError as answer:
            assert (answer.code, answer.headers["Retry-After"]) == (429, "10")
            assert (
                "plans are waiting for one of terraform.concurrency=2 slots"
                in json.loads(answer.read())["error"]
            )
        else:
            raise AssertionError("the plan was not refused")
    finally:
        api.stop()
    assert world.reconciler.terraform.processes_started == started
