"""Nothing destroyed, replaced or forked that should not be: each finding of a fault-injection run.

Real Terraform, moto and git; every test checks the world (state objects, lock
items, inventory entries) as well as the records.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from controller.synth import SynthWorker
from controller.types import Phase, Reason
from tests.conftest import Toolchain
from tests.integration.conftest import (
    Aws,
    Hook,
    Repo,
    World,
    build_world,
    make_repo,
    make_settings,
    preview,
    tamper,
)
from tests.integration.test_cli import envctl, raw_settings, reconcile_until_slow, status, write_config
from tests.integration.test_inventory import another
from tests.integration.test_leader import BlackHoleProxy


def lock_items(aws: Aws) -> list[str]:
    """The lock table's locks (not Terraform's -md5 digest items)."""
    return [i["LockID"]["S"] for i in aws.lock_items() if not i["LockID"]["S"].endswith("-md5")]


def test_two_repositories_sharing_a_prefix_never_replace_each_other(
    world: World, tmp_path: Path, toolchain: Toolchain, demo_worker: SynthWorker, hook: Hook
):
    """A second controller declaring pr50 is Stalled, one alert naming both; the first's world is intact."""
    world.repo.write("pr50", preview(50))
    assert world.reconciler.run_pass().outcomes == {"pr50": "applied"}
    state_before = world.aws.state(world.key("pr50"))
    entry_before = world.aws.state(world.settings.state.inventory_key("pr50"))
    second = make_repo(tmp_path / "second-repo")
    other_repo = second.origin
    second.write("pr50", preview(50, revision="theirs"))
    alerts = {"webhook": {"url": hook.url}}
    with another(
        tmp_path, world, toolchain, demo_worker, repository={"url": str(other_repo)}, alerts=alerts
    ) as other:
        started = other.reconciler.terraform.processes_started
        for _ in range(2):
            other.reconciler.run_pass()
        record = other.store.load("pr50")
        assert (record.phase, record.reason) == (Phase.STALLED, Reason.OWNED_ELSEWHERE)
        assert str(world.repo.origin) in record.message and str(other_repo) in record.message
        assert other.reconciler.terraform.processes_started == started
        other.reconciler.alerts.flush()
    assert [a["event"] for a in hook.received] == ["environment_stalled"]
    assert world.aws.state(world.key("pr50")) == state_before
    assert world.aws.state(world.settings.state.inventory_key("pr50")) == entry_before


def test_a_state_object_deleted_behind_envctls_back_stalls_the_destroy(world: World):
    """An applied environment whose state vanished is Stalled on removal, never recorded Destroyed."""
    world.repo.write("pr1", preview(1))
    world.repo.write("pr2", preview(2))
    world.reconciler.run_pass()
    world.aws.client("s3").delete_object(Bucket=world.aws.bucket, Key=world.key("pr1"))
    world.repo.write("pr1", preview(1, state="closed"))
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    record = world.store.load("pr1")
    assert (record.phase, record.reason) == (Phase.STALLED, Reason.STATE_MISSING)
    assert "was state.bucket or key_prefix changed?" in record.message
    # The inventory entry still says resources may exist; nothing was deleted.
    assert world.settings.state.inventory_key("pr1") in world.aws.objects()
    assert world.reconciler.run_pass().outcomes == {}


def test_a_destroy_runs_with_the_saved_configuration_when_the_stack_rejects_the_old_spec(
    world: World, tmp_path: Path
):
    """Today's stack refuses yesterday's spec; the destroy uses the configuration applied then."""
    world.repo.write("pr1", preview(1, credentials=True))
    world.repo.write("pr2", preview(2))
    world.reconciler.run_pass()
    # The stack code changed: it no longer knows `credentials`.
    rejecting = tmp_path / "rejecting_stack.py"
    rejecting.write_text(
        "def build(scope, environment):\n"
        "    raise ValueError('parameters.credentials: no longer supported')\n"
    )
    worker = SynthWorker(
        "rejecting_stack:build", world.settings.synth, env={**os.environ, "PYTHONPATH": str(tmp_path)}
    )
    world.reconciler.synth = worker
    try:
        world.repo.write("pr1", preview(1, credentials=True, state="closed"))
        assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
    finally:
        worker.close()
    assert world.phase("pr1") == "Destroyed"
    assert world.aws.objects() == world.keys("pr2")


def test_remediation_switched_to_alert_stops_auto_repair_without_an_apply(world: World):
    """remediation: alert on an unchanged preview takes effect next pass: drift reported, not repaired."""
    from tests.integration.test_drift import drop, tamper

    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pr1", {**preview(1), "drift": {"remediation": "alert", "interval_minutes": 7}})
    started = world.reconciler.terraform.processes_started
    assert world.reconciler.run_pass().outcomes == {}
    assert world.reconciler.terraform.processes_started == started
    tamper(world.aws, world.key("pr1"), drop("cluster"))
    assert world.reconciler.check_drift("pr1") == "drifted"
    assert "cluster" not in {r["name"] for r in world.aws.state(world.key("pr1"))["resources"]}
    assert world.store.load("pr1").spec["drift_interval_minutes"] == 7


def apply_until_cut(world: World, workdir: Path, cut: threading.Event) -> dict:
    """Apply pr1 (a 6 s resource) and set `cut` once Terraform is creating it; the pass's outcomes."""
    world.repo.write("pr1", preview(1, sleep_seconds=6))
    outcome: dict = {}
    passing = threading.Thread(target=lambda: outcome.update(world.reconciler.run_pass().outcomes))
    passing.start()
    deadline = time.monotonic() + 60
    while "null_resource.slow: Creating..." not in _output(workdir):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cut.set()
    passing.join(timeout=300)
    return outcome


def test_a_state_upload_cut_mid_apply_is_pushed_before_the_next_run(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain, demo_worker: SynthWorker
):
    """The endpoint dies mid-apply: the newer state is kept and pushed first; nothing is created twice."""
    proxy = BlackHoleProxy(aws.endpoint)
    settings = make_settings(
        tmp_path, repo, aws, toolchain, terraform={"lock_timeout_seconds": 2}, state={"endpoint": proxy.url}
    )
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    try:
        workdir = settings.workdir / "envs" / "pr1"
        assert apply_until_cut(world, workdir, proxy.refuse) == {"pr1": "failed"}
        record = world.store.load("pr1")
        assert (record.phase, record.reason) == (Phase.STALLED, Reason.STATE_NOT_PERSISTED)
        assert "envctl will push it before any other run" in record.message
        saved = json.loads((workdir / "errored.tfstate").read_text())
        assert len(saved["resources"]) == 7
        proxy.refuse.clear()
        world.now[0] = record.next_attempt_at + 1
        world.repo.write("pr1", preview(1, sleep_seconds=6))
        assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
        assert world.phase("pr1") == "Ready"
        assert len(aws.state(settings.state.key("pr1"))["resources"]) == 7
        assert settings.state.errored_state_key("pr1") not in aws.objects()
        assert lock_items(aws) == []
        # Each resource was created once: the second apply found all of them in the pushed state.
        assert "Creation complete" not in _output(workdir)
    finally:
        next(worlds, None)
        proxy.close()


class TerraformBlackHole(BlackHoleProxy):
    """A proxy that, once `cut` is set, cuts only Terraform's requests (its User-Agent names it):
    the endpoint fails for Terraform's upload while envctl's own S3 calls still get through."""

    def __init__(self, upstream: str) -> None:
        self.cut = threading.Event()
        super().__init__(upstream)

    def cuts(self, data: bytes) -> bool:
        return super().cuts(data) or (self.cut.is_set() and b"Terraform/" in data)


def test_a_saved_state_only_in_s3_is_pushed_before_a_destroy(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain, demo_worker: SynthWorker
):
    """The upload is cut mid-apply, then the workdir is lost (a new pod, another leader): the next
    run, a destroy, pushes the copy kept in S3 first and destroys every resource it names."""
    import structlog

    proxy = TerraformBlackHole(aws.endpoint)
    settings = make_settings(
        tmp_path, repo, aws, toolchain, terraform={"lock_timeout_seconds": 2}, state={"endpoint": proxy.url}
    )
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    try:
        workdir = settings.workdir / "envs" / "pr1"
        assert apply_until_cut(world, workdir, proxy.cut) == {"pr1": "failed"}
        proxy.cut.clear()
        # The newer state exists only in the bucket now; the state object itself has none of it.
        assert settings.state.errored_state_key("pr1") in aws.objects()
        assert settings.state.key("pr1") not in aws.objects()
        shutil.rmtree(workdir)
        world.now[0] = world.store.load("pr1").next_attempt_at + 1
        world.repo.write("pr1", preview(1, state="closed", sleep_seconds=6))
        with structlog.testing.capture_logs() as logs:
            assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
        said = [entry.get("line", "") for entry in logs if entry["event"] == "terraform_output"]
        assert "Destroy complete! Resources: 7 destroyed." in said
        assert [e["event"] for e in logs].index("errored_state_pushed") < [e["event"] for e in logs].index(
            "destroy_succeeded"
        )
        assert world.phase("pr1") == "Destroyed"
        assert aws.objects() == []
    finally:
        next(worlds, None)
        proxy.close()


def _output(workdir: Path) -> str:
    log = workdir / ".envctl-terraform.log"
    return log.read_text(errors="replace") if log.exists() else ""


def test_a_lock_left_by_a_killed_envctl_is_released_on_restart_and_the_run_resumes(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain
):
    """envctl and its Terraform SIGKILLed mid-apply: the restart releases that lock, alerts, applies."""
    settings = make_settings(tmp_path, repo, aws, toolchain)
    config = write_config(tmp_path, raw_settings(settings))
    repo.write("pr1", preview(1, sleep_seconds=60))
    proc = reconcile_until_slow(config)
    workdir = settings.workdir / "envs" / "pr1"
    terraform_pids = [
        int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _cwd(p) == str(workdir.resolve())
    ]
    proc.kill()
    for pid in terraform_pids:
        if _alive(pid):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in terraform_pids):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert lock_items(aws) == [f"{aws.bucket}/{settings.state.key('pr1')}"]
    repo.write("pr1", preview(1, sleep_seconds=1))
    result = envctl("reconcile", config=config)
    assert result.returncode == 0, result.stdout[-3000:]
    assert '"event": "stale_lock_released"' in result.stdout
    assert status(config)["pr1"]["phase"] == "Ready"
    assert lock_items(aws) == []


def _cwd(proc: Path) -> str:
    try:
        return os.readlink(proc / "cwd")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_a_foreign_lock_is_never_touched_and_envctl_unlock_releases_it(world: World, tmp_path: Path):
    """Another holder's lock only fails the run; `envctl unlock NAME ID --confirm` releases it."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pr1", preview(1, revision="2"))
    lock_id = f"{world.aws.bucket}/{world.key('pr1')}"
    info = {
        "ID": "9999-ffff",
        "Operation": "OperationTypeApply",
        "Who": "carol@elsewhere",
        "Version": "1.15.5",
        "Created": "2026-11-30T09:00:00Z",
        "Path": lock_id,
        "Info": "",
    }
    world.aws.client("dynamodb").put_item(
        TableName=world.aws.table, Item={"LockID": {"S": lock_id}, "Info": {"S": json.dumps(info)}}
    )
    for _ in range(2):
        world.now[0] += 3600
        assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    record = world.store.load("pr1")
    assert record.reason == Reason.LOCKED
    assert "carol@elsewhere (operation Apply, taken 2026-11-30 09:00:00 +0000 UTC, lock ID 9999-ffff)" in (
        record.message
    )
    assert lock_items(world.aws) == [lock_id]
    config = write_config(tmp_path, raw_settings(world.settings))
    refused = envctl("unlock", "pr1", "9999-ffff", config=config)
    assert refused.returncode == 2 and "--confirm" in refused.stderr
    done = envctl("unlock", "pr1", "9999-ffff", "--confirm", config=config)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "pr1: lock 9999-ffff released" in done.stdout
    assert lock_items(world.aws) == []
    # The release is on the record, written like a run's outcome.
    released = world.store.load("pr1")
    assert released.lock_released_id == "9999-ffff"
    assert released.lock_released.startswith("an operator released the state lock 9999-ffff")
    world.now[0] += 3600
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}


def test_a_repair_whose_state_upload_is_cut_keeps_that_state(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain, demo_worker: SynthWorker
):
    """A drift repair cut while Terraform uploads its state: the newer state is kept (in S3) and
    the environment waits to push it, as after a failed apply; nothing is lost."""
    from tests.integration.test_drift import drop

    proxy = TerraformBlackHole(aws.endpoint)
    settings = make_settings(
        tmp_path, repo, aws, toolchain, terraform={"lock_timeout_seconds": 2}, state={"endpoint": proxy.url}
    )
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    try:
        world.repo.write("pr1", preview(1, sleep_seconds=6))
        assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
        tamper(aws, settings.state.key("pr1"), drop("slow"))
        outcome: list[str] = []
        checking = threading.Thread(target=lambda: outcome.append(world.reconciler.check_drift("pr1")))
        checking.start()
        workdir = settings.workdir / "envs" / "pr1"
        deadline = time.monotonic() + 120
        repairing = lambda: [r for r in world.store.runs("pr1") if r.action == "repair"]  # noqa: E731
        while not repairing() or "null_resource.slow: Creating..." not in _output(workdir):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proxy.cut.set()
        checking.join(timeout=300)
        proxy.cut.clear()
        assert outcome == ["failed"]
        record = world.store.load("pr1")
        assert (record.phase, record.reason) == (Phase.STALLED, Reason.STATE_NOT_PERSISTED)
        saved = json.loads(
            aws.client("s3")
            .get_object(Bucket=aws.bucket, Key=settings.state.errored_state_key("pr1"))["Body"]
            .read()
        )
        assert "slow" in {r["name"] for r in saved["resources"]}
    finally:
        next(worlds, None)
        proxy.close()


def test_a_saved_configuration_changed_in_the_bucket_is_not_run(world: World):
    """Someone rewrote the configuration kept for pr1's destroy (a provisioner of theirs): the
    destroy stalls naming the object, runs no Terraform, and leaves the state as it was."""
    world.repo.write("pr1", preview(1))
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
    assert not (world.settings.workdir / "envs" / "pr1" / "tfplan").exists()
    key = world.settings.state.config_key("pr1")
    s3 = world.aws.client("s3")
    document = json.loads(s3.get_object(Bucket=world.aws.bucket, Key=key)["Body"].read())
    document["resource"]["null_resource"]["evil"] = {
        "provisioner": [{"local-exec": {"command": "echo owned", "when": "destroy"}}]
    }
    s3.put_object(Bucket=world.aws.bucket, Key=key, Body=json.dumps(document).encode())
    started = world.reconciler.terraform.processes_started
    world.repo.write("pr1", preview(1, state="closed"))
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    record = world.store.load("pr1")
    assert (record.phase, record.reason) == (Phase.STALLED, Reason.CONFIG_CHANGED)
    assert f"s3://{world.aws.bucket}/{key} is not the configuration envctl saved" in record.message
    assert world.reconciler.terraform.processes_started == started
    assert world.aws.objects() == world.keys("pr1")
