"""The reconcile loop end to end: real git, real Terraform, S3 state and DynamoDB locks on moto."""

from __future__ import annotations

import shutil
from pathlib import Path

from controller.types import Phase, Reason
from tests.integration.conftest import World, persistent, preview


def test_new_preview_is_applied_with_its_own_state_key(world: World):
    """A pushed preview is applied: state at {prefix}/{name}/terraform.tfstate, Ready at the revision."""
    world.repo.write("pr1", preview(1))
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "applied"}
    assert world.aws.objects() == [
        "envctl/pr1/envctl-config.tf.json",
        "envctl/pr1/envctl.json",
        "envctl/pr1/terraform.tfstate",
    ]
    state = world.aws.state("envctl/pr1/terraform.tfstate")
    names = sorted(r["instances"][0]["attributes"]["triggers"]["name"] for r in state["resources"])
    assert names[0] == "envctl-pr1-cluster" and len(names) == 6
    record = world.store.load("pr1")
    assert record.phase is Phase.READY
    assert record.applied_revision == world.repo.clone.head.commit.hexsha
    assert record.kind == "preview"


def test_changed_file_reapplies_only_that_environment(world: World):
    """Changing one file re-applies it; the other environment starts no Terraform process."""
    world.repo.write("pr1", preview(1))
    world.repo.write("pr2", preview(2))
    world.reconciler.run_pass()
    world.repo.write("pr1", preview(1, revision="2"))
    started = world.reconciler.terraform.processes_started
    synths = world.reconciler.synth.synths
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "applied"}
    assert world.reconciler.synth.synths == synths + 1
    # init, plan, apply for pr1 only
    assert world.reconciler.terraform.processes_started == started + 3
    state = world.aws.state(world.key("pr1"))
    assert {r["instances"][0]["attributes"]["triggers"]["revision"] for r in state["resources"]} == {"2"}


def test_pass_with_nothing_changed_starts_nothing(world: World):
    """A second pass over the same revision runs no synth and no Terraform process."""
    world.repo.write("pr1", preview(1))
    world.repo.write("staging", persistent())
    world.reconciler.run_pass()
    started = world.reconciler.terraform.processes_started
    synths = world.reconciler.synth.synths
    result = world.reconciler.run_pass()
    assert result.outcomes == {}
    assert world.reconciler.terraform.processes_started == started
    assert world.reconciler.synth.synths == synths


def test_closed_preview_is_destroyed_and_can_come_back(world: World):
    """Closing destroys and deletes the state; re-opening later creates it cleanly."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pr1", preview(1, state="closed"))
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "destroyed"}
    assert world.aws.objects() == []
    assert world.aws.lock_items() == []
    record = world.store.load("pr1")
    assert record.phase is Phase.DESTROYED
    world.repo.write("pr1", preview(1))
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
    assert world.aws.objects() == world.keys("pr1")
    assert len(world.aws.state(world.key("pr1"))["resources"]) == 6


def test_removed_preview_file_is_destroyed(world: World):
    """Removing a preview's file destroys it (deletion defaults to destroy for previews)."""
    world.repo.write("pr1", preview(1))
    world.repo.write("pr2", preview(2))
    world.reconciler.run_pass()
    world.repo.remove("pr1")
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "destroyed"}
    assert world.aws.objects() == world.keys("pr2")
    assert world.phase("pr1") == "Destroyed"
    assert world.phase("pr2") == "Ready"


def test_removed_persistent_file_is_orphaned_not_destroyed(world: World):
    """Removing a persistent environment's file destroys nothing and records Orphaned."""
    world.repo.write("staging", persistent())
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.remove("staging")
    result = world.reconciler.run_pass()
    assert result.outcomes == {"staging": "Orphaned"}
    assert world.key("staging") in world.aws.objects()
    assert len(world.aws.state(world.key("staging"))["resources"]) == 6
    assert world.phase("staging") == "Orphaned"


def test_invalid_files_are_marked_and_destroy_nothing(world: World):
    """Bad YAML, unknown field, bad name, collision: Invalid; others reconcile; nothing destroyed."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pr1", "kind: preview\npull_request: [1\n")
    world.repo.write("pr2", {**preview(2), "colour": "blue"})
    world.repo.write("PR-3.yaml", preview(3))
    world.repo.write("pr4.yaml", preview(4))
    world.repo.write("pr4.yml", preview(4))
    world.repo.write("pr5", preview(5))
    result = world.reconciler.run_pass()
    assert result.outcomes["pr5"] == "applied"
    for name in ("pr1", "pr2", "PR-3", "pr4"):
        assert world.phase(name) == "Invalid", name
    assert "environments/pr1.yaml" in world.store.load("pr1").message
    assert "colour" in world.store.load("pr2").message
    assert "allowed" in world.store.load("PR-3").message
    assert "2 files" in world.store.load("pr4").message
    # pr1 was applied before it went bad: its state is untouched.
    assert len(world.aws.state(world.key("pr1"))["resources"]) == 6


def test_unreachable_remote_destroys_nothing_and_recovers(world: World, tmp_path: Path):
    """With the origin gone the pass ends with a source error; when it returns, work resumes."""
    world.repo.write("pr1", preview(1))
    first = world.reconciler.run_pass()
    moved = tmp_path / "moved.git"
    shutil.move(world.repo.origin, moved)
    result = world.reconciler.run_pass()
    assert "cannot fetch main" in result.error
    assert result.actions == []
    assert world.store.get_meta("last_revision") == first.revision
    assert world.phase("pr1") == "Ready"
    assert world.aws.objects() == world.keys("pr1")
    shutil.move(moved, world.repo.origin)
    world.repo.write("pr2", preview(2))
    assert world.reconciler.run_pass().outcomes == {"pr2": "applied"}


def test_force_push_is_adopted(world: World):
    """A force-pushed branch with different history becomes the new desired state."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    clone = world.repo.clone
    clone.git.reset("--hard", "HEAD~1")
    world.repo.write("pr9", preview(9))  # pushes with force: pr1 vanishes from history
    result = world.reconciler.run_pass()
    assert result.revision == clone.head.commit.hexsha
    assert result.outcomes == {"pr1": "destroyed", "pr9": "applied"}


def test_stale_git_lock_from_a_crash_is_removed(world: World):
    """A leftover ref lock in the clone does not block the next fetch."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    lock = world.settings.workdir / "repo.git" / "refs" / "remotes" / "origin" / "main.lock"
    lock.write_text("crashed")
    world.repo.write("pr2", preview(2))
    result = world.reconciler.run_pass()
    assert result.error == ""
    assert result.outcomes == {"pr2": "applied"}
    assert not lock.exists()


def test_mass_removal_is_held_until_one_is_confirmed_with_envctl_destroy(world: World, tmp_path: Path):
    """Removing 6 files against max_destroys_per_pass=5 destroys none; after `envctl destroy pr3
    --confirm` the next pass destroys pr3 alone; the other five (now within the limit) stay held."""
    from tests.integration.test_cli import envctl, raw_settings, write_config

    names = [f"pr{i}" for i in range(1, 7)]
    for index, name in enumerate(names, start=1):
        world.repo.write(name, preview(index))
    world.repo.write("staging", persistent())
    world.reconciler.run_pass()
    world.repo.remove(*names)
    result = world.reconciler.run_pass()
    assert all(result.outcomes[name] == "DestroyHeld" for name in names)
    assert world.aws.objects() == world.keys(*names, "staging")
    record = world.store.load("pr1")
    assert record.reason == Reason.SAFETY_LIMIT
    assert "max_destroys_per_pass=5" in record.message
    assert "envctl destroy pr1 pr2 pr3 pr4 pr5 pr6 --confirm" in record.message
    config = write_config(tmp_path, raw_settings(world.settings))
    # This world's controller owns the workdir, as a daemon does: the CLI records the confirmation.
    confirmed = envctl("destroy", "pr3", "--confirm", config=config)
    assert confirmed.returncode == 0, confirmed.stderr
    assert confirmed.stdout.startswith("pr3: destroy confirmed")
    assert world.reconciler.run_pass().outcomes == {"pr3": "destroyed"}
    assert world.key("pr3") not in world.aws.objects()
    # The other five stay held pass after pass: one confirmation released exactly one destroy.
    rest = [n for n in names if n != "pr3"]
    for _ in range(2):
        assert world.reconciler.run_pass().outcomes == {}
    assert {n: world.phase(n) for n in rest} == dict.fromkeys(rest, "DestroyHeld")
    assert world.aws.objects() == world.keys(*rest, "staging")


def test_empty_listing_is_not_a_deletion(world: World):
    """A revision whose environments folder is gone destroys nothing."""
    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.remove("pr1")
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "DestroyHeld"}
    assert world.store.load("pr1").reason == Reason.EMPTY_LISTING
    assert world.aws.objects() == world.keys("pr1")


def test_failed_apply_is_recorded_retried_with_backoff_and_isolated(world: World):
    """A failing stack is Failed with Terraform's error; it waits its backoff; others are unaffected."""
    world.repo.write("pr1", preview(1, fail="quota exceeded for widgets"))
    world.repo.write("pr2", preview(2))
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "failed", "pr2": "applied"}
    record = world.store.load("pr1")
    assert record.phase is Phase.FAILED
    assert record.reason == Reason.APPLY_FAILED
    assert "quota exceeded for widgets" in record.message
    assert record.next_attempt_at == world.now[0] + 30
    # Inside the backoff: nothing runs.
    assert world.reconciler.run_pass().outcomes == {}
    world.now[0] += 31
    assert world.reconciler.run_pass().outcomes == {"pr1": "failed"}
    record = world.store.load("pr1")
    assert record.failures == 2
    assert record.next_attempt_at == world.now[0] + 60
    # Fixing the file retries at once.
    world.repo.write("pr1", preview(1))
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied"}
    assert world.store.load("pr1").failures == 0


def test_unknown_stack_parameter_is_a_permanent_failure(world: World):
    """The stack refuses an unknown parameter by name: Stalled, no Terraform runs, waits for a change."""
    world.repo.write("pr1", preview(1, flavour="large"))
    started = world.reconciler.terraform.processes_started
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "failed"}
    record = world.store.load("pr1")
    assert (record.phase, record.reason) == (Phase.STALLED, Reason.STACK_REJECTED)
    assert "parameters.flavour" in record.message and "environments/pr1.yaml" in record.message
    assert world.reconciler.terraform.processes_started == started
    world.now[0] += 10 * 24 * 3600
    assert world.reconciler.run_pass().outcomes == {}
    # Its file goes: no state was ever written, so it is destroyed without a stack or Terraform.
    world.repo.write("pr2", preview(2))
    world.repo.remove("pr1")
    assert world.reconciler.run_pass().outcomes == {"pr1": "destroyed", "pr2": "applied"}
    assert world.phase("pr1") == "Destroyed"
    assert world.reconciler.terraform.processes_started == started + 3
    assert world.aws.objects() == world.keys("pr2")


def test_state_lock_held_elsewhere_fails_naming_the_holder(world: World):
    """With the lock taken by someone else the run fails after the timeout and names them."""
    import json

    world.repo.write("pr1", preview(1))
    world.reconciler.run_pass()
    world.repo.write("pr1", preview(1, revision="2"))
    lock_id = f"{world.aws.bucket}/{world.key('pr1')}"
    info = {
        "ID": "1234-abcd",
        "Operation": "OperationTypeApply",
        "Who": "alice@laptop",
        "Version": "1.0.3",
        "Created": "2026-11-29T10:00:00Z",
        "Path": lock_id,
        "Info": "",
    }
    world.aws.client("dynamodb").put_item(
        TableName=world.aws.table, Item={"LockID": {"S": lock_id}, "Info": {"S": json.dumps(info)}}
    )
    result = world.reconciler.run_pass()
    assert result.outcomes == {"pr1": "failed"}
    record = world.store.load("pr1")
    assert record.reason == Reason.LOCKED
    assert "alice@laptop" in record.message and "1234-abcd" in record.message
    items = {item["LockID"]["S"]: item for item in world.aws.lock_items()}
    assert json.loads(items[lock_id]["Info"]["S"])["Who"] == "alice@laptop"


def test_settings_stack_parameters_are_defaults_the_file_overrides(
    tmp_path, repo, aws, toolchain, demo_worker
):
    """stack_parameters apply to every environment; an environment's own parameter wins."""
    from tests.integration.conftest import build_world, make_settings

    settings = make_settings(tmp_path, repo, aws, toolchain, stack_parameters={"revision": "7"})
    worlds = build_world(settings, repo, aws, demo_worker)
    world = next(worlds)
    try:
        repo.write("pr1", preview(1))
        repo.write("pr2", preview(2, revision="9"))
        assert world.reconciler.run_pass().outcomes == {"pr1": "applied", "pr2": "applied"}
        for name, expected in (("pr1", "7"), ("pr2", "9")):
            state = world.aws.state(world.key(name))
            assert {r["instances"][0]["attributes"]["triggers"]["revision"] for r in state["resources"]} == {
                expected
            }
    finally:
        next(worlds, None)  # closes the source and the store, removes the workdir


def test_a_persistent_environment_survives_a_kind_flip_then_a_close(world: World):
    """staging applied as persistent; commit 1 says `kind: preview`, commit 2 `state: closed`:
    held at the first, nothing applied or destroyed at either; its state is intact."""
    world.repo.write("staging", persistent())
    assert world.reconciler.run_pass().outcomes == {"staging": "applied"}
    state = world.aws.state(world.key("staging"))
    world.repo.write("staging", {"kind": "preview", "pull_request": 9})
    assert world.reconciler.run_pass().outcomes == {"staging": "DestroyHeld"}
    record = world.store.load("staging")
    assert (record.reason, record.applied_kind) == (Reason.KIND_CHANGE, "persistent")
    world.repo.write("staging", {"kind": "preview", "pull_request": 9, "state": "closed"})
    assert world.reconciler.run_pass().outcomes == {}
    assert world.phase("staging") == "DestroyHeld"
    assert world.aws.state(world.key("staging"))["serial"] == state["serial"]
    assert world.aws.objects() == world.keys("staging")
    assert [r.action for r in world.store.runs("staging")] == ["apply"]


def test_an_alias_bomb_beside_a_normal_file_is_invalid_and_the_other_applied(world: World):
    """A few hundred bytes of nested YAML aliases: that file is Invalid, named with the rule; the
    environment beside it is applied in the same pass."""
    bomb = "kind: preview\npull_request: 9\na: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    world.repo.write("pr9", bomb)
    world.repo.write("pr1", preview(1))
    assert world.reconciler.run_pass().outcomes == {"pr1": "applied", "pr9": "Invalid"}
    record = world.store.load("pr9")
    assert record.message == (
        "environments/pr9.yaml: line 3: YAML anchors and aliases (&, *) are not allowed; write the values out"
    )
