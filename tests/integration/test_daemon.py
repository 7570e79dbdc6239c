"""`envctl run` as a daemon: it picks up pushes on its schedule and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from apscheduler.schedulers.base import STATE_STOPPED

from controller.scheduler import Daemon
from controller.store import StatusStore
from tests.conftest import ROOT
from tests.integration.conftest import env_keys, persistent, preview
from tests.integration.test_cli import envctl, setup


def start_daemon(config, log, level: str = "debug", **env: str) -> subprocess.Popen:
    """`envctl run` in the background, its log in a file (a PIPE nobody reads would block it).

    At debug by default: tests count passes by their `pass_decided` events, which an idle pass
    logs at debug only. `--log-level` comes after the subcommand, as people type it.
    """
    return subprocess.Popen(
        [sys.executable, "-m", "controller", "run", "--config", str(config), "--log-level", level],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def stop_daemon(proc: subprocess.Popen, log, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the daemon and wait for it to exit; one that hangs is killed and fails the test with its log."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack into the log
        time.sleep(1)
        proc.kill()
        proc.wait()
        tail = log.read_text()[-8000:]
        raise AssertionError(f"envctl did not exit within 60 s of {sig.name}:\n{tail}") from None


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_daemon_converges_pushes_and_stops_on_sigterm(tmp_path, repo, aws, toolchain):
    """A running `envctl run` applies a pushed preview, destroys it once closed, and exits 0 on SIGTERM."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("staging", persistent())
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    store = StatusStore(settings.workdir / "status.db")

    def phase(name: str) -> str:
        record = store.load(name)
        return str(record.phase) if record else ""

    try:
        wait_for(lambda: phase("staging") == "Ready")
        repo.write("pr3", preview(3))
        wait_for(lambda: phase("pr3") == "Ready")
        assert settings.state.key("pr3") in aws.objects()
        repo.write("pr3", preview(3, state="closed"))
        wait_for(lambda: phase("pr3") == "Destroyed")
        assert aws.objects() == env_keys(settings.state, "staging")
        # The API of the running daemon tells the same story.
        port = json.loads(next(line for line in log.read_text().splitlines() if "api_listening" in line))[
            "port"
        ]
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/readyz", timeout=10) as response:  # noqa: S310 - loopback
            assert response.status == 200
        with urllib.request.urlopen(f"{base}/api/environments", timeout=10) as response:  # noqa: S310
            phases = {row["name"]: row["phase"] for row in json.loads(response.read())}
        assert phases == {"staging": "Ready", "pr3": "Destroyed"}
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        passes = re.search(r'envctl_reconcile_passes_total\{result="ok"\} (\d+)', text)
        assert passes and int(passes.group(1)) >= 3
        assert 'envctl_terraform_runs_total{command="destroy",outcome="ok"} 1.0' in text
        assert 'envctl_environments{phase="Destroyed"} 1.0' in text
    finally:
        stop_daemon(proc, log)
        store.close()
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert '"event": "daemon_stopped"' in output


def test_second_controller_on_the_same_workdir_is_refused(tmp_path, repo, aws, toolchain):
    """Two processes never work one workdir: the second exits 1 naming the workdir."""
    _, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("staging", persistent())
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    try:
        wait_for(lambda: '"event": "daemon_started"' in log.read_text())
        second = envctl("reconcile", config=config, timeout=120)
    finally:
        stop_daemon(proc, log)
    assert second.returncode == 1
    assert "workdir is in use by another envctl process" in second.stderr


def test_daemon_schedules_drift_checks_for_new_environments_and_drops_destroyed_ones(
    tmp_path, repo, aws, toolchain
):
    """Without a restart: a new preview gets a drift schedule and is checked; destroyed, it is dropped."""
    settings, config = setup(
        tmp_path, repo, aws, toolchain, drift={"interval_minutes": 0.05, "jitter_fraction": 0}
    )
    repo.write("staging", persistent())
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    store = StatusStore(settings.workdir / "status.db")
    try:
        wait_for(lambda: store.load("staging") is not None and store.load("staging").drift_checked_at > 0)
        repo.write("pr8", preview(8))
        wait_for(lambda: store.load("pr8") is not None and store.load("pr8").drift_interval_seconds == 3.0)
        wait_for(lambda: store.load("pr8").drift_status == "InSync")
        repo.write("pr8", preview(8, state="closed"))
        wait_for(lambda: store.load("pr8").phase.value == "Destroyed")
        wait_for(lambda: store.load("pr8").drift_interval_seconds == 0.0)
        checks_before = sum(r.action == "drift_check" for r in store.runs("pr8", limit=100))
        staging_before = sum(r.action == "drift_check" for r in store.runs("staging", limit=100))
        # Two more of staging's checks (every 3 s) have run: pr8's schedule, had it stayed, would
        # have fired in that time too.
        wait_for(
            lambda: (
                sum(r.action == "drift_check" for r in store.runs("staging", limit=100)) >= staging_before + 2
            )
        )
        assert sum(r.action == "drift_check" for r in store.runs("pr8", limit=100)) == checks_before
    finally:
        stop_daemon(proc, log)
        store.close()
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    scheduled = [e for e in events if e["event"] == "drift_check_scheduled"]
    assert {"env": "pr8", "every_seconds": 3.0} in [
        {k: e.get(k) for k in ("env", "every_seconds")} for e in scheduled
    ]
    assert '"event": "drift_check_unscheduled"' in output


def test_signed_webhook_triggers_a_pass_and_a_burst_coalesces(tmp_path, repo, aws, toolchain):
    """Polling hourly, a signed push delivery applies a new preview at once; a burst of ten makes one pass."""
    import hashlib
    import hmac
    import os

    settings, config = setup(
        tmp_path,
        repo,
        aws,
        toolchain,
        repository={"url": str(repo.origin), "branch": "main", "path": "environments", "poll_seconds": 3600},
        api={"host": "127.0.0.1", "port": 0, "webhooks": True},
    )
    repo.write("staging", persistent())
    log = tmp_path / "daemon.log"
    without_secret = {k: v for k, v in os.environ.items() if k != "ENVCTL_WEBHOOK_SECRET"}
    refused = envctl("run", config=config, timeout=60, env=without_secret)
    assert refused.returncode == 2 and "ENVCTL_WEBHOOK_SECRET" in refused.stderr
    secret = "hook-secret"
    proc = start_daemon(config, log, ENVCTL_WEBHOOK_SECRET=secret)
    store = StatusStore(settings.workdir / "status.db")
    try:
        wait_for(lambda: store.load("staging") is not None and store.load("staging").phase.value == "Ready")
        port = json.loads(next(line for line in log.read_text().splitlines() if "api_listening" in line))[
            "port"
        ]
        repo.write("pr5", preview(5))
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()

        def deliver() -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hooks/github",
                data=body,
                method="POST",
                headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return response.status

        assert deliver() == 202
        wait_for(
            lambda: store.load("pr5") is not None and store.load("pr5").phase.value == "Ready", timeout=60
        )
        passes_before = log.read_text().count('"event": "pass_decided"')
        assert [deliver() for _ in range(10)] == [202] * 10
        wait_for(lambda: log.read_text().count('"event": "pass_decided"') > passes_before, timeout=60)
        # A sentinel after the burst's pass: one more commit and delivery. Every pass the burst
        # caused comes before the sentinel's environment is Ready.
        repo.write("pr6", preview(6))
        assert deliver() == 202
        wait_for(
            lambda: store.load("pr6") is not None and store.load("pr6").phase.value == "Ready", timeout=60
        )
        assert log.read_text().count('"event": "pass_decided"') - passes_before == 2
    finally:
        stop_daemon(proc, log)
        store.close()
    assert proc.returncode == 0


def test_confirming_a_held_destroy_beside_a_running_daemon(tmp_path, repo, aws, toolchain):
    """With a daemon owning the workdir, `destroy --confirm` records the confirmation; the daemon destroys."""
    settings, config = setup(tmp_path, repo, aws, toolchain, safety={"max_destroys_per_pass": 0})
    repo.write("pr1", preview(1))
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    store = StatusStore(settings.workdir / "status.db")
    try:
        wait_for(lambda: store.load("pr1") is not None and store.load("pr1").phase.value == "Ready")
        repo.write("pr1", preview(1, state="closed"))
        wait_for(lambda: store.load("pr1").phase.value == "DestroyHeld")
        assert settings.state.key("pr1") in aws.objects()
        repo.write("pr2", preview(2))
        wait_for(lambda: store.load("pr2") is not None and store.load("pr2").phase.value == "Ready")
        # Only a held destroy can be confirmed: an open, Ready environment is refused, nothing recorded.
        refused = envctl("destroy", "pr2", "--confirm", config=config, timeout=120)
        assert refused.returncode == 2
        assert "pr2: not waiting for a destroy (phase Ready)" in refused.stderr
        assert store.load("pr2").destroy_confirmed is False
        # Stalled on an apply (the stack refused a parameter): not a held destroy, nothing recorded.
        repo.write("pr3", preview(3, bogus="x"))
        wait_for(lambda: store.load("pr3") is not None and store.load("pr3").phase.value == "Stalled")
        stalled = envctl("destroy", "pr1", "pr3", "--confirm", config=config, timeout=120)
        assert stalled.returncode == 2
        assert "pr3: not waiting for a destroy (phase Stalled)" in stalled.stderr
        assert (store.load("pr3").destroy_confirmed, store.load("pr1").destroy_confirmed) == (False, False)
        confirm = envctl("destroy", "--all-held", "--confirm", config=config, timeout=120)
        assert confirm.returncode == 0, confirm.stderr
        assert confirm.stdout.splitlines()[0] == "held destroys: pr1"
        assert "pr1: destroy confirmed; the running controller destroys it" in confirm.stdout
        wait_for(lambda: store.load("pr1").phase.value == "Destroyed")
        assert aws.objects() == env_keys(settings.state, "pr2")
    finally:
        stop_daemon(proc, log)
        store.close()


def test_shutdown_during_a_pass_interrupts_terraform_and_returns(world):
    """Shutdown mid-apply: Terraform is interrupted, the pass ends, the schedule stops, nothing deadlocks.

    The pass's last step reschedules drift checks; APScheduler's shutdown holds its job store lock while
    it waits for running jobs, so a pass that touched the schedule after shutdown began hung the daemon.
    """
    world.repo.write("staging", persistent())
    world.repo.write("pr1", preview(1, sleep_seconds=60))
    daemon = Daemon(world.reconciler, poll_seconds=3600)
    daemon.start()
    wait_for(lambda: world.phase("pr1") == "Applying" and world.phase("staging") == "Ready")
    # Terraform is inside the slow resource (its own output says so).
    output = world.settings.workdir / "envs" / "pr1" / ".envctl-terraform.log"
    wait_for(
        lambda: output.exists() and "null_resource.slow: Creating..." in output.read_text(errors="replace")
    )
    stopper = threading.Thread(target=daemon.shutdown, name="test-shutdown", daemon=True)
    stopper.start()
    stopper.join(timeout=120)
    assert not stopper.is_alive(), "daemon.shutdown() hung"
    record = world.store.load("pr1")
    assert (record.phase.value, record.reason) == ("Failed", "Interrupted")
    # Terraform released its lock itself (the -md5 items are digests, not locks).
    assert [i["LockID"]["S"] for i in world.aws.lock_items() if not i["LockID"]["S"].endswith("-md5")] == []
    assert daemon.scheduler.get_jobs() == []
    # No timer outlived the shutdown: no drift check or retry is due for any environment.
    assert {name: world.reconciler.queue.timer(name) for name in world.store.load_all()} == {
        "pr1": None,
        "staging": None,
    }


def test_a_pass_that_ends_after_shutdown_began_does_not_hang_it(world):
    """A pass still finishing when shutdown starts (e.g. the fetch of a poll that began just before
    SIGTERM) ends without touching the schedule, and shutdown returns.

    The pass is held at its start by holding the reconciler's pass lock, as a pass in progress holds it.
    """
    world.repo.write("staging", persistent())
    daemon = Daemon(world.reconciler, poll_seconds=3600)
    started = world.reconciler.terraform.processes_started
    with world.reconciler._pass_lock:
        daemon.start()
        wait_for(lambda: world.reconciler._pass_lock.locked() and daemon.scheduler.get_jobs() != [])
        stopper = threading.Thread(target=daemon.shutdown, name="test-shutdown", daemon=True)
        stopper.start()
        wait_for(lambda: daemon.scheduler.state == STATE_STOPPED)
        time.sleep(0.5)  # shutdown now waits for the running poll job
    stopper.join(timeout=120)
    assert not stopper.is_alive(), "daemon.shutdown() hung"
    # The held pass ran once shutdown had begun: the closed queue took no work, so no Terraform
    # started and nothing was scheduled; the next start decides staging again.
    assert world.store.load("staging") is None
    assert world.store.runs() == []
    assert world.reconciler.terraform.processes_started == started


def test_plan_drift_synth_and_status_ask_the_running_daemon(tmp_path, repo, aws, toolchain):
    """Beside a daemon that owns the workdir, `plan`, `drift` and `synth` are answered through its
    API; `plan` prints Terraform's own text and a summary; `status NAME` tells one environment's
    story; an idle daemon logs nothing at info, and every line it writes is JSON."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("pr1", preview(1))
    repo.write("staging", persistent())
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log, level="info")
    store = StatusStore(settings.workdir / "status.db")
    try:
        wait_for(
            lambda: (
                {str(r.phase) for r in store.load_all().values()} == {"Ready"} and len(store.load_all()) == 2
            )
        )
        plan = envctl("plan", "pr1", config=config)
        assert plan.returncode == 0, plan.stderr
        assert "No changes. Your infrastructure matches the configuration." in plan.stdout
        assert plan.stdout.strip().splitlines()[-1].startswith("pr1: No changes.")
        assert "line=" not in plan.stdout and '"event"' not in plan.stdout
        drift = envctl("drift", config=config)
        assert (drift.returncode, sorted(drift.stdout.split("\n")[:2])) == (
            0,
            ["pr1: in_sync", "staging: in_sync"],
        )
        one = envctl("drift", "pr404", config=config)
        assert one.returncode == 2 and "pr404: not a Ready environment" in one.stderr
        out = tmp_path / "synth"
        synth = envctl("synth", "pr1", "--out", str(out), config=config)
        assert synth.returncode == 0, synth.stderr
        document = json.loads((out / "main.tf.json").read_text())
        assert document["terraform"]["backend"]["s3"]["key"] == "envctl/pr1/terraform.tfstate"
        detail = envctl("status", "pr1", config=config)
        assert detail.returncode == 0, detail.stderr
        for fragment in (
            "pr1: Ready (Applied)",
            "pull request:",
            "#1",
            "phases (newest first):",
            "runs (newest first):",
        ):
            assert fragment in detail.stdout, (fragment, detail.stdout)
        assert re.search(r"apply\s+succeeded\s+\d+ s", detail.stdout)
        table = envctl("status", config=config).stdout
        assert re.search(r"fetched (just now|\d+ (s|min) ago)", table)
        # Idle: polls every second, nothing to do, nothing said at info (three polls seen happen).
        said = log.read_text().count("\n")
        fetches = {store.get_meta("last_fetch_at")}

        def three_more_polls() -> bool:
            fetches.add(store.get_meta("last_fetch_at"))
            return len(fetches) >= 4

        wait_for(three_more_polls)
        quiet = log.read_text().splitlines()[said:]
        assert [line for line in quiet if '"level": "info"' in line] == []
    finally:
        stop_daemon(proc, log)
        store.close()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    for line in lines:
        json.loads(line)  # every line, the libraries' included, is a JSON object
    assert '"event": "client_command"' in log.read_text()


def test_nothing_to_check_is_said_and_is_not_success(tmp_path, repo, aws, toolchain):
    """`envctl drift` with no Ready environment says so and exits 2; help, --version and a
    --log-level after the subcommand work."""
    _, config = setup(tmp_path, repo, aws, toolchain)
    empty = envctl("drift", config=config)
    assert empty.returncode == 2
    assert "nothing to check: no environment is Ready" in empty.stdout
    version = subprocess.run(
        [sys.executable, "-m", "controller", "--version"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert version.returncode == 0 and re.fullmatch(r"envctl \d+\.\d+\.\d+\n", version.stdout)
    helped = subprocess.run(
        [sys.executable, "-m", "controller", "status", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert "one environment: spec, phases, runs, drift, outputs" in helped.stdout
    assert "include environments destroyed over a day ago" in helped.stdout
    quiet = envctl("status", "--log-level", "error", config=config)
    assert quiet.returncode == 0, quiet.stderr


def test_a_plan_beside_a_running_apply_answers_without_waiting_for_its_lock(tmp_path, repo, aws, toolchain):
    """`envctl plan NAME` while NAME applies answers before that apply ends, says so, and never
    suggests unlocking the lock envctl's own apply holds."""
    settings, config = setup(tmp_path, repo, aws, toolchain)
    repo.write("pr1", preview(1, sleep_seconds=45))
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    store = StatusStore(settings.workdir / "status.db")
    try:
        # The apply holds the state lock (its DynamoDB item names the holder).
        wait_for(lambda: any("Info" in item for item in aws.lock_items()))
        plan = envctl("plan", "pr1", config=config)
        # Answered while the apply still runs: its run is unfinished and the lock still held.
        assert [run.finished_at for run in store.runs("pr1")] == [None]
        assert any("Info" in item for item in aws.lock_items())
        assert plan.returncode == 0, plan.stderr
        assert re.search(r"note: pr1 is applying \(run \d+, started \d+ s ago\)", plan.stdout), plan.stdout
        assert plan.stdout.strip().splitlines()[-1].startswith("pr1: Plan:")
        assert "unlock" not in plan.stdout + plan.stderr
    finally:
        stop_daemon(proc, log)
        store.close()
