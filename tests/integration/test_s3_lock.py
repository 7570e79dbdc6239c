"""`state.lock: s3` (Terraform's `use_lockfile`) on a real Terraform 1.15, checked in the bucket itself.

The same guarantees as the DynamoDB lock: each environment locks its own state,
a lock held by someone else is waited for and reported but never broken, a
graceful stop releases the lock, and a destroy leaves nothing of the
environment behind and touches nothing else.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.synth import SynthWorker
from controller.types import Reason
from tests.conftest import Toolchain
from tests.integration.conftest import Aws, Repo, World, build_world, make_settings, preview
from tests.integration.test_cli import envctl, raw_settings, reconcile_until_slow, status, write_config


@pytest.fixture
def s3_world(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain, demo_worker: SynthWorker
) -> Iterator[World]:
    settings = make_settings(tmp_path, repo, aws, toolchain, state={"lock": "s3"})
    yield from build_world(settings, repo, aws, demo_worker)


def lock_key(world: World, name: str) -> str:
    return f"{world.key(name)}.tflock"


def wait_for(condition, what: str, seconds: float = 120.0):
    """Poll `condition` until it returns something truthy; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def test_two_environments_apply_at_once_each_under_its_own_lock_file(s3_world: World):
    """Two slow applies run together, each holding a `.tflock` beside its own state, then releasing it."""
    world = s3_world
    world.repo.write("pr1", preview(1, sleep_seconds=10))
    world.repo.write("pr2", preview(2, sleep_seconds=10))
    result = {}
    thread = threading.Thread(target=lambda: result.update(world.reconciler.run_pass().outcomes))
    thread.start()
    both = {lock_key(world, "pr1"), lock_key(world, "pr2")}
    # Both lock files exist at one moment (wait_for fails the test if they never do).
    wait_for(lambda: both <= set(world.aws.objects()), "both lock files at once")
    thread.join(timeout=120)
    assert result == {"pr1": "applied", "pr2": "applied"}
    assert world.aws.objects() == world.keys("pr1", "pr2")
    assert world.aws.lock_items() == []


def test_lock_file_held_elsewhere_is_waited_for_reported_and_never_broken(s3_world: World):
    """A `.tflock` written by another Terraform: the run waits, fails naming holder and ID, the lock stays."""
    world = s3_world
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pr1", preview(1, revision="2"))
    info = {
        "ID": "5678-efgh",
        "Operation": "OperationTypeApply",
        "Who": "bob@workstation",
        "Version": "1.15.5",
        "Created": "2026-11-30T09:00:00Z",
        "Path": f"{world.aws.bucket}/{world.key('pr1')}",
        "Info": "",
    }
    body = json.dumps(info).encode()
    world.aws.client("s3").put_object(Bucket=world.aws.bucket, Key=lock_key(world, "pr1"), Body=body)
    started = time.monotonic()
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    # Terraform retried for the configured -lock-timeout before giving up.
    assert time.monotonic() - started >= world.settings.terraform.lock_timeout_seconds
    record = world.store.load("pr1")
    assert record.reason == Reason.LOCKED
    assert "bob@workstation" in record.message and "5678-efgh" in record.message
    held = world.aws.client("s3").get_object(Bucket=world.aws.bucket, Key=lock_key(world, "pr1"))
    assert held["Body"].read() == body


def test_destroy_removes_state_lock_file_and_inventory_and_nothing_else(s3_world: World):
    """A destroy deletes exactly its state object, lock file and inventory entry under the prefix."""
    world = s3_world
    world.repo.write("pr1", preview(1))
    world.repo.write("pr2", preview(2))
    world.reconciler.run_pass()
    s3 = world.aws.client("s3")
    neighbours = ["envctl/pr1-notes.txt", "envctl/pr1/README.txt", "envctl/pr10/terraform.tfstate"]
    for key in neighbours:
        s3.put_object(Bucket=world.aws.bucket, Key=key, Body=b"not envctl's")
    world.repo.write("pr1", preview(1, state="closed"))
    assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
    assert world.aws.objects() == sorted([*world.keys("pr2"), *neighbours])


def test_sigterm_mid_apply_leaves_no_lock_file_and_the_next_start_resumes(
    tmp_path: Path, repo: Repo, aws: Aws, toolchain: Toolchain
):
    """SIGTERM during a slow apply: Terraform saves state and deletes its `.tflock`; the next run finishes."""
    settings = make_settings(tmp_path, repo, aws, toolchain)
    raw = raw_settings(settings)
    raw["state"]["lock"] = "s3"
    config = write_config(tmp_path, raw)
    repo.write("pr1", preview(1, sleep_seconds=60))
    proc = reconcile_until_slow(config)
    lock = f"{settings.state.key('pr1')}.tflock"
    assert lock in aws.objects()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1
    assert "terraform_interrupt_sent" in output and "force-unlock" not in output
    assert lock not in aws.objects()
    assert status(config)["pr1"]["reason"] == "Interrupted"
    saved = aws.state(settings.state.key("pr1"))
    assert len([r for r in saved["resources"] if r["name"] != "slow"]) == 6
    repo.write("pr1", preview(1, sleep_seconds=1))
    result = envctl("reconcile", config=config)
    assert result.returncode == 0, result.stdout[-3000:]
    assert status(config)["pr1"]["phase"] == "Ready"
    assert lock not in aws.objects()
