"""The planner's decisions compared whole: name, kind, reason, message, phase, environment, digest.

The table in test_planner checks what each decision is; this one checks all of what it carries
(what to apply, what to destroy with, the message people read), at the boundaries of every
time and count comparison. Written against the mutants `make mutate` found surviving.
"""

from __future__ import annotations

import pytest

from controller.planner import Action, Kind, confirm_command, decide, digest
from controller.types import Environment, Invalid, Phase, Reason, Record
from tests.controller.test_planner import CLOSED, NOW, STAGING, VERSION, E, applied, env

D = digest(E, VERSION)
LAST = Environment.from_spec(E.spec())


def decision(desired, recorded, now=NOW, **limits):
    actions = decide(
        desired, recorded, now, stack_version=VERSION, max_destroys=limits.pop("max_destroys", 5), **limits
    )
    return next(a for a in actions if a.name == "pr1")


def stalled(action: str, reason: Reason = Reason.STACK_REJECTED, **changes) -> Record:
    return applied(
        E, phase=Phase.STALLED, reason=reason, stalled_action=action, attempted_digest=D, **changes
    )


CASES = [
    # (what, desired, recorded, expected)
    ("new", {"pr1": E}, {}, Action("pr1", Kind.APPLY, environment=E, digest=D)),
    (
        "invalid, new",
        {"pr1": Invalid("pr1", "f", "bad")},
        {},
        Action("pr1", Kind.RECORD, Reason.INVALID_SPEC, "bad", Phase.INVALID),
    ),
    (
        "invalid, same message recorded on another phase",
        {"pr1": Invalid("pr1", "f", "bad")},
        {"pr1": applied(E, message="bad")},
        Action("pr1", Kind.RECORD, Reason.INVALID_SPEC, "bad", Phase.INVALID),
    ),
    (
        "stalled apply, same content: waits with its reason",
        {"pr1": E},
        {"pr1": stalled("apply")},
        Action("pr1", Kind.WAIT, Reason.STACK_REJECTED),
    ),
    (
        "stalled apply, file changed: applied",
        {"pr1": env(size="l")},
        {"pr1": stalled("apply")},
        Action("pr1", Kind.APPLY, environment=env(size="l"), digest=digest(env(size="l"), VERSION)),
    ),
    (
        "state not persisted, before its retry",
        {"pr1": E},
        {"pr1": stalled("destroy", Reason.STATE_NOT_PERSISTED, next_attempt_at=NOW + 1)},
        Action("pr1", Kind.WAIT, Reason.STATE_NOT_PERSISTED),
    ),
    (
        "state not persisted, at its retry",
        {"pr1": E},
        {"pr1": stalled("destroy", Reason.STATE_NOT_PERSISTED, next_attempt_at=NOW)},
        Action("pr1", Kind.APPLY, environment=E, digest=D),
    ),
    (
        "failed, backoff ends now: retried",
        {"pr1": E},
        {"pr1": applied(E, phase=Phase.FAILED, attempted_digest=D, next_attempt_at=NOW)},
        Action("pr1", Kind.APPLY, environment=E, digest=D),
    ),
    (
        "stalled destroy, not confirmed: waits",
        {"pr1": CLOSED},
        {"pr1": stalled("destroy", Reason.STATE_MISSING)},
        Action("pr1", Kind.WAIT, Reason.STATE_MISSING),
    ),
    (
        "stalled destroy, confirmed: destroyed",
        {"pr1": CLOSED},
        {"pr1": stalled("destroy", Reason.STATE_MISSING, destroy_confirmed=True)},
        Action("pr1", Kind.DESTROY, Reason.PULL_REQUEST_CLOSED, environment=CLOSED),
    ),
    (
        "stalled apply, then closed: destroyed",
        {"pr1": CLOSED},
        {"pr1": stalled("apply")},
        Action("pr1", Kind.DESTROY, Reason.PULL_REQUEST_CLOSED, environment=CLOSED),
    ),
    (
        "destroying: waits",
        {"pr1": CLOSED},
        {"pr1": applied(E, phase=Phase.DESTROYING)},
        Action("pr1", Kind.WAIT, Reason.IN_PROGRESS),
    ),
    (
        "closed, never applied",
        {"pr1": CLOSED},
        {},
        Action("pr1", Kind.RECORD, Reason.NEVER_APPLIED, "nothing was applied", Phase.DESTROYED),
    ),
    (
        "removed: destroyed with the last spec",
        {"x": env("x")},
        {"pr1": applied(E), "x": applied(env("x"))},
        Action("pr1", Kind.DESTROY, Reason.FILE_REMOVED, environment=LAST),
    ),
    (
        "removed, nothing applied",
        {"x": env("x")},
        {"pr1": Record("pr1", phase=Phase.PENDING), "x": applied(env("x"))},
        Action("pr1", Kind.RECORD, Reason.FILE_REMOVED, "file removed; nothing was applied", Phase.DESTROYED),
    ),
    (
        "removed, destroyed already",
        {"x": env("x")},
        {"pr1": applied(E, phase=Phase.DESTROYED), "x": applied(env("x"))},
        Action("pr1", Kind.NOTHING),
    ),
    (
        "closed, its state not persisted, before the retry",
        {"pr1": CLOSED},
        {"pr1": stalled("destroy", Reason.STATE_NOT_PERSISTED, next_attempt_at=NOW + 1)},
        Action("pr1", Kind.WAIT, Reason.STATE_NOT_PERSISTED),
    ),
    (
        "closed, its state not persisted, at the retry",
        {"pr1": CLOSED},
        {"pr1": stalled("destroy", Reason.STATE_NOT_PERSISTED, next_attempt_at=NOW)},
        Action("pr1", Kind.DESTROY, Reason.PULL_REQUEST_CLOSED, environment=CLOSED),
    ),
    (
        "removed, orphan",
        {"x": env("x")},
        {"pr1": applied(env(deletion="orphan")), "x": applied(env("x"))},
        Action(
            "pr1",
            Kind.RECORD,
            Reason.ORPHANED,
            "file removed; deletion is orphan, so its resources were left in place",
            Phase.ORPHANED,
        ),
    ),
]


@pytest.mark.parametrize(("what", "desired", "recorded", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_decision_carries_exactly_what_it_should(what, desired, recorded, expected):
    """The whole decision: what to apply (and its digest) or destroy with, reason, message, phase."""
    assert decision(desired, recorded) == expected, what


def test_a_persistent_kind_flip_is_held_with_the_file_to_apply_once_confirmed():
    """The hold carries the flipped spec and says exactly what to do; held already, nothing more."""
    flipped = env("pr1", kind="preview")
    record = applied(STAGING, name="pr1", applied_kind="persistent")
    record.name = "pr1"
    held = decision({"pr1": flipped}, {"pr1": record})
    assert held == Action(
        "pr1",
        Kind.RECORD,
        Reason.KIND_CHANGE,
        "pr1 was applied as a persistent environment; its file now says kind: preview, which would make "
        "it destroyable by a later commit. Nothing is applied until a person confirms with `envctl "
        "destroy pr1 --confirm` (then it is applied as a preview), or the file says kind: persistent again",
        Phase.DESTROY_HELD,
        environment=flipped,
    )
    record.phase, record.reason = Phase.DESTROY_HELD, Reason.PERSISTENT
    assert decision({"pr1": flipped}, {"pr1": record}).kind is Kind.RECORD  # another hold: re-recorded
    record.reason = Reason.KIND_CHANGE
    assert decision({"pr1": flipped}, {"pr1": record}) == Action("pr1", Kind.NOTHING)


def test_a_removed_persistent_file_is_held_with_its_last_spec():
    """The persistent hold carries what to destroy with once confirmed, and the command."""
    staging = env("pr1", kind="persistent", deletion="destroy")
    record = applied(staging, applied_kind="persistent")
    held = decision({"x": env("x")}, {"pr1": record, "x": applied(env("x"))})
    assert (held.kind, held.reason, held.phase) == (Kind.RECORD, Reason.PERSISTENT, Phase.DESTROY_HELD)
    assert held.environment == Environment.from_spec(staging.spec())
    assert "`envctl destroy pr1 --confirm`, or restore the file" in held.message
    record.phase, record.reason = Phase.DESTROY_HELD, Reason.KIND_CHANGE
    assert decision({"x": env("x")}, {"pr1": record, "x": applied(env("x"))}).kind is Kind.RECORD


def test_held_batches_carry_their_environment_and_the_command():
    """Over the limit: each held record keeps what it would destroy with; the message names the
    count and, with retries waiting, how many."""
    recorded = {f"pr{i}": applied(env(f"pr{i}")) for i in range(1, 4)}
    recorded["keep"] = applied(env("keep"))
    actions = {
        a.name: a for a in decide({"keep": env("keep")}, recorded, NOW, stack_version=VERSION, max_destroys=2)
    }
    held = actions["pr1"]
    assert held.environment == Environment.from_spec(env("pr1").spec())
    assert held.message == (
        "this pass would destroy 3 environments: over safety.max_destroys_per_pass=2; none of them "
        "destroyed (confirm with `envctl destroy pr1 pr2 pr3 --confirm`, or raise the limit)"
    )
    # Already held for that reason: nothing to record again; held for another: recorded.
    for name in ("pr1", "pr2", "pr3"):
        recorded[name].phase, recorded[name].reason = Phase.DESTROY_HELD, Reason.SAFETY_LIMIT
    again = {
        a.name: a for a in decide({"keep": env("keep")}, recorded, NOW, stack_version=VERSION, max_destroys=2)
    }
    assert again["pr1"] == Action("pr1", Kind.NOTHING)
    recorded["pr4"] = applied(
        env("pr4"), phase=Phase.FAILED, reason=Reason.DESTROY_FAILED, next_attempt_at=NOW + 60
    )
    recorded["pr5"] = applied(env("pr5"))
    one_more = {
        a.name: a for a in decide({"keep": env("keep")}, recorded, NOW, stack_version=VERSION, max_destroys=1)
    }
    assert one_more["pr5"].message.startswith(
        "this pass would destroy 1 environment, and 1 more wait for a retry"
    )


def test_the_hourly_budget_defaults_to_nothing_used_and_says_what_is_left():
    """Without a count of the last hour, the whole budget is there; a spent budget says 0 left."""
    recorded = {f"pr{i}": applied(env(f"pr{i}")) for i in range(1, 4)}
    recorded["keep"] = applied(env("keep"))
    within = decide(
        {"keep": env("keep")}, recorded, NOW, stack_version=VERSION, max_destroys=5, max_destroys_per_hour=3
    )
    assert sum(a.kind is Kind.DESTROY for a in within) == 3
    spent = decide(
        {"keep": env("keep")},
        recorded,
        NOW,
        stack_version=VERSION,
        max_destroys=5,
        max_destroys_per_hour=3,
        destroyed_last_hour=5,
    )
    held = next(a for a in spent if a.name == "pr1")
    assert "and 0 destroys of safety.max_destroys_per_hour are left this hour" in held.message


def test_an_empty_listing_holds_with_the_command_for_exactly_those():
    """No files at all: every removal is held as EmptyListing, naming the command."""
    held = decision({}, {"pr1": applied(E)})
    assert held == Action(
        "pr1",
        Kind.RECORD,
        Reason.EMPTY_LISTING,
        "the environments folder lists no files; 1 destroy held "
        "(confirm with `envctl destroy pr1 --confirm`)",
        Phase.DESTROY_HELD,
        environment=LAST,
    )


def test_a_run_under_way_keeps_its_name_on_the_wait():
    """A record decided while its run is under way is a wait for pr1 itself."""
    assert decision({"pr1": Invalid("pr1", "f", "bad")}, {"pr1": applied(E, phase=Phase.APPLYING)}) == Action(
        "pr1", Kind.WAIT, Reason.IN_PROGRESS
    )


@pytest.mark.parametrize(("count", "shown"), [(10, 10), (11, 10)])
def test_the_confirm_command_names_up_to_ten(count, shown):
    """Ten names are all shown; eleven are cut to ten and an ellipsis."""
    command = confirm_command([f"pr{i}" for i in range(count)])
    assert command.count("pr") == shown and command.endswith(
        "... --confirm" if count > 10 else f"pr{count - 1} --confirm"
    )


def test_an_expired_preview_is_destroyed_with_its_spec_and_a_failed_destroy_waits():
    """Past its TTL: destroyed as it is declared (reason Expired); a failed destroy of it waits."""
    expired = frozenset({"pr1"})
    action = decide(
        {"pr1": E}, {"pr1": applied(E)}, NOW, stack_version=VERSION, max_destroys=5, expired=expired
    )
    assert action == [Action("pr1", Kind.DESTROY, Reason.EXPIRED, environment=E)]
    failing = applied(E, phase=Phase.FAILED, reason=Reason.DESTROY_FAILED, next_attempt_at=NOW + 1)
    waiting = decide(
        {"pr1": E}, {"pr1": failing}, NOW, stack_version=VERSION, max_destroys=5, expired=expired
    )
    assert waiting == [Action("pr1", Kind.WAIT, Reason.BACKOFF)]


def test_the_hourly_budget_message_counts_what_this_pass_would_destroy():
    """Held by the hourly budget: how many this pass would destroy, how many are left."""
    recorded = {f"pr{i}": applied(env(f"pr{i}")) for i in range(1, 3)}
    recorded["keep"] = applied(env("keep"))
    actions = decide(
        {"keep": env("keep")},
        recorded,
        NOW,
        stack_version=VERSION,
        max_destroys=5,
        max_destroys_per_hour=10,
        destroyed_last_hour=9,
    )
    held = next(a for a in actions if a.name == "pr1")
    assert held.message == (
        "this pass would destroy 2 environments, and 1 destroy of safety.max_destroys_per_hour are left "
        "this hour; none of them destroyed (confirm with `envctl destroy pr1 pr2 --confirm`, or raise the "
        "limit)"
    )
