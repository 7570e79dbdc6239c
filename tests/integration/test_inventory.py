"""The inventory beside the state: a controller without its status database forgets nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from controller.planner import digest
from controller.statefiles import StateFiles
from controller.synth import SynthWorker
from controller.types import Phase, Reason
from tests.conftest import Toolchain
from tests.integration.conftest import Aws, World, build_world, make_settings, persistent, preview


@contextmanager
def another(
    tmp_path: Path, world: World, toolchain: Toolchain, worker: SynthWorker, **overrides: Any
) -> Iterator[World]:
    """A second controller on the same repository and bucket with a workdir of its own (a new leader)."""
    settings = make_settings(tmp_path / "other", world.repo, world.aws, toolchain, **overrides)
    worlds = build_world(settings, world.repo, world.aws, worker)
    other = next(worlds)
    other.now[0] = world.now[0]
    try:
        yield other
    finally:
        next(worlds, None)


def put(aws: Aws, key: str, body: str) -> None:
    aws.client("s3").put_object(Bucket=aws.bucket, Key=key, Body=body.encode())


def test_an_applied_environment_has_an_inventory_entry(world: World):
    """After an apply the entry holds the spec, the applied digest and revision, and the repository."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    entry = world.aws.state(world.settings.state.inventory_key("pr1"))
    record = world.store.load("pr1")
    assert entry["spec"] == record.spec and entry["spec"]["pull_request"] == 1
    assert (
        entry["applied_digest"]
        == record.applied_digest
        == digest(
            world.reconciler.desired(world.reconciler.source.fetch())["pr1"],  # type: ignore[arg-type]
            world.reconciler.stack_version,
        )
    )
    assert entry["applied_revision"] == world.repo.clone.head.commit.hexsha
    assert entry["source"] == {"url": str(world.repo.origin), "branch": "main", "path": "environments"}


def test_a_new_leader_without_a_status_database_adopts_and_still_destroys(
    world: World, tmp_path: Path, toolchain: Toolchain, demo_worker: SynthWorker
):
    """Unchanged environments are adopted with no Terraform run; a removed preview is destroyed,
    a removed persistent environment orphaned."""
    for name, spec in (("pr1", preview(1)), ("pr2", preview(2)), ("staging", persistent())):
        world.repo.write(name, spec)
    assert set(world.reconciler.run_pass().outcomes.values()) == {"applied"}
    with another(tmp_path, world, toolchain, demo_worker) as leader:
        started = leader.reconciler.terraform.processes_started
        # Both worlds share the session's warm worker: its count before and after the pass.
        synths = leader.reconciler.synth.synths
        assert leader.reconciler.run_pass().outcomes == {}
        assert leader.reconciler.terraform.processes_started == started
        assert leader.reconciler.synth.synths == synths
        for name in ("pr1", "pr2", "staging"):
            record = leader.store.load(name)
            assert (record.phase, record.reason) == (Phase.READY, Reason.ADOPTED), name
            assert record.applied_digest == world.store.load(name).applied_digest
        world.repo.remove("pr1", "staging")
        result = leader.reconciler.run_pass()
        assert result.outcomes == {"pr1": "destroyed", "staging": "Orphaned"}
        assert world.aws.objects() == world.keys("pr2", "staging")
        assert leader.phase("pr1") == "Destroyed"


def test_a_stale_destroyed_record_does_not_hide_a_recreated_environment(
    world: World, tmp_path: Path, toolchain: Toolchain, demo_worker: SynthWorker
):
    """Leader A destroyed pr1; B re-created it; when A leads again and the file goes, A destroys it."""
    world.repo.write("pr1", preview(1))
    world.repo.write("staging", persistent())
    world.reconciler.run_pass()
    world.repo.write("pr1", preview(1, state="closed"))
    assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
    with another(tmp_path, world, toolchain, demo_worker) as leader:
        world.repo.write("pr1", preview(1, revision="2"))
        assert leader.reconciler.run_pass().outcomes == {"pr1": "applied"}
    world.repo.remove("pr1")
    assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
    assert world.aws.objects() == world.keys("staging")
    assert world.phase("pr1") == "Destroyed"


def test_a_failed_first_apply_is_destroyed_when_its_file_goes(world: World):
    """A partial apply, then an invalid file, then no file: what the apply left is destroyed."""
    world.repo.write("pr1", preview(1, fail="quota exceeded"))
    world.repo.write("pr2", preview(2))
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed", "pr2": "applied"}
    assert world.settings.state.inventory_key("pr1") in world.aws.objects()
    world.repo.write("pr1", "kind: [preview\n")
    assert world.reconciler.run_pass().outcomes == {"pr1": "Invalid"}
    world.repo.remove("pr1")
    assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
    assert world.aws.objects() == world.keys("pr2")


def test_entries_of_another_repository_or_unreadable_are_left_alone(
    world: World, tmp_path: Path, toolchain: Toolchain, demo_worker: SynthWorker
):
    """Another controller's entries, broken entries and an unlistable bucket adopt and destroy nothing."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    state = world.settings.state
    put(world.aws, state.inventory_key("pr7"), "{not json")
    put(world.aws, state.inventory_key("pr8"), json.dumps({"version": 99}))
    entry = world.aws.state(state.inventory_key("pr1"))
    put(world.aws, state.inventory_key("pr9"), json.dumps({**entry, "spec": {**entry["spec"], "name": "x"}}))
    put(world.aws, state.inventory_key("pr6"), json.dumps({**entry, "spec": {"colour": "blue"}}))
    put(world.aws, state.inventory_key("pr5"), json.dumps([1]))
    # A name no file could have: paths built from it would leave the workdir.
    put(
        world.aws,
        f"{state.folder()}../envctl.json",
        json.dumps({**entry, "spec": {**entry["spec"], "name": ".."}}),
    )
    before = world.aws.objects()
    with structlog.testing.capture_logs() as logs:
        assert world.reconciler.adopt() == []
        assert world.reconciler.run_pass().outcomes == {}
    problems = {e["env"]: e["problem"] for e in logs if e["event"] == "inventory_entry_not_adopted"}
    assert "not JSON" in problems["pr7"]
    assert "version 99 is not 1" in problems["pr8"]
    assert "spec names 'x', not 'pr9'" in problems["pr9"]
    assert "spec is not an environment" in problems["pr6"]
    assert "expected a JSON object, got list" in problems["pr5"]
    assert "inventory name '..' is not allowed; expected a file name stem" in problems[".."]
    # Unusable entries are reported once per process, not every pass.
    assert sorted(problems) == ["..", "pr5", "pr6", "pr7", "pr8", "pr9"]
    assert sum(e["event"] == "inventory_entry_not_adopted" for e in logs) == 6
    assert sorted(world.store.load_all()) == ["pr1"]
    # Same bucket and prefix, another folder of the repository: another controller's environments.
    with another(tmp_path, world, toolchain, demo_worker, repository={"path": "elsewhere"}) as other:
        with structlog.testing.capture_logs() as logs:
            assert other.reconciler.run_pass().outcomes == {}
        assert other.store.load_all() == {}
        problems = {e["env"]: e["problem"] for e in logs if e["event"] == "inventory_entry_not_adopted"}
        assert "'path': 'environments'" in problems["pr1"] and "left to its own controller" in problems["pr1"]
    assert world.aws.objects() == before
    # A bucket that cannot be listed is not an empty inventory.
    world.reconciler.inventory.state = StateFiles(replace(state, bucket="no-such-bucket"))
    world.store.update("pr1", phase=Phase.DESTROYED)
    with structlog.testing.capture_logs() as logs:
        assert world.reconciler.adopt() == []
    assert [e["event"] for e in logs] == ["inventory_unreadable"]
    assert "no-such-bucket" in logs[0]["error"]
    assert world.phase("pr1") == "Destroyed"


def test_a_leader_with_a_stale_record_destroys_what_another_leader_applied_last(
    world: World, tmp_path: Path, toolchain: Toolchain, demo_worker: SynthWorker
):
    """A applied pr1; B applied a change (a new saved configuration); A, leading again with its
    older record, destroys pr1 with B's configuration: the saved configuration is checked against
    the inventory entry the last applying leader wrote, not only A's record."""
    world.repo.write("pr1", preview(1))
    world.repo.write("staging", persistent())
    world.reconciler.run_pass()
    with another(tmp_path, world, toolchain, demo_worker) as leader:
        world.repo.write("pr1", preview(1, revision="2"))
        assert leader.reconciler.run_pass().outcomes == {"pr1": "applied"}
    assert world.phase("pr1") == "Ready"  # A's record still names its own apply
    world.repo.remove("pr1")
    assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed"}
    assert world.aws.objects() == world.keys("staging")
