"""The planner as a table: desired + recorded + now -> one decision per environment."""

from __future__ import annotations

import pytest

from controller.planner import Kind, decide, digest
from controller.types import Environment, Invalid, Phase, Reason, Record

NOW = 1_000.0
VERSION = "v1"


def env(name: str = "pr1", kind: str = "preview", state: str = "open", deletion: str | None = None, **params):
    return Environment(
        name=name,
        kind=kind,
        state=state,
        region="us-east-1",
        deletion=deletion or ("destroy" if kind == "preview" else "orphan"),
        file=f"environments/{name}.yaml",
        pull_request=1 if kind == "preview" else None,
        parameters=params,
    )


def applied(e: Environment, version: str = VERSION, **changes) -> Record:
    record = Record(
        name=e.name, kind=e.kind, phase=Phase.READY, applied_digest=digest(e, version), spec=e.spec()
    )
    for key, value in changes.items():
        setattr(record, key, value)
    return record


def one(desired, recorded, now=NOW, max_destroys=5, version=VERSION):
    actions = decide(desired, recorded, now, stack_version=version, max_destroys=max_destroys)
    assert len(actions) == 1
    return actions[0]


E = env()
CLOSED = env(state="closed")
STAGING = env("staging", kind="persistent")
BAD = Invalid("pr1", "environments/pr1.yaml", "environments/pr1.yaml: kind: 'x' is not allowed")

TABLE = [
    # (what, desired, recorded, expected kind, expected phase or reason)
    ("new open preview", {"pr1": E}, {}, Kind.APPLY, None),
    ("unchanged and ready", {"pr1": E}, {"pr1": applied(E)}, Kind.NOTHING, None),
    ("file content changed", {"pr1": env(size="l")}, {"pr1": applied(E)}, Kind.APPLY, None),
    (
        "failed, inside backoff",
        {"pr1": E},
        {"pr1": applied(E, phase=Phase.FAILED, attempted_digest=digest(E, VERSION), next_attempt_at=NOW + 5)},
        Kind.WAIT,
        Reason.BACKOFF,
    ),
    (
        "failed, backoff over",
        {"pr1": E},
        {"pr1": applied(E, phase=Phase.FAILED, attempted_digest=digest(E, VERSION), next_attempt_at=NOW - 1)},
        Kind.APPLY,
        None,
    ),
    (
        "failed, file changed since",
        {"pr1": env(size="l")},
        {
            "pr1": applied(
                E, phase=Phase.FAILED, attempted_digest=digest(E, VERSION), next_attempt_at=NOW + 99
            )
        },
        Kind.APPLY,
        None,
    ),
    ("applying when interrupted", {"pr1": E}, {"pr1": applied(E, phase=Phase.APPLYING)}, Kind.APPLY, None),
    (
        "applying this very content: waits for its outcome",
        {"pr1": E},
        {"pr1": applied(E, phase=Phase.APPLYING, applied_digest="", attempted_digest=digest(E, VERSION))},
        Kind.WAIT,
        Reason.IN_PROGRESS,
    ),
    (
        "applying older content, file changed: queued behind it",
        {"pr1": env(size="l")},
        {"pr1": applied(E, phase=Phase.APPLYING, attempted_digest=digest(E, VERSION))},
        Kind.APPLY,
        None,
    ),
    (
        "closed preview being destroyed: waits for its outcome",
        {"pr1": CLOSED},
        {"pr1": applied(E, phase=Phase.DESTROYING)},
        Kind.WAIT,
        Reason.IN_PROGRESS,
    ),
    (
        "closed preview, applied",
        {"pr1": CLOSED},
        {"pr1": applied(E)},
        Kind.DESTROY,
        Reason.PULL_REQUEST_CLOSED,
    ),
    ("closed preview, never applied", {"pr1": CLOSED}, {}, Kind.RECORD, Phase.DESTROYED),
    (
        "closed preview, destroyed",
        {"pr1": CLOSED},
        {"pr1": applied(E, phase=Phase.DESTROYED)},
        Kind.NOTHING,
        None,
    ),
    (
        "closed preview, destroy failed, backoff",
        {"pr1": CLOSED},
        {"pr1": applied(E, phase=Phase.FAILED, next_attempt_at=NOW + 5)},
        Kind.WAIT,
        Reason.BACKOFF,
    ),
    ("preview file removed", {"x": env("x")}, {"pr1": applied(E)}, Kind.DESTROY, Reason.FILE_REMOVED),
    (
        "removed while a failed apply backs off: destroyed now",
        {"x": env("x")},
        {"pr1": applied(E, phase=Phase.FAILED, reason=Reason.APPLY_FAILED, next_attempt_at=NOW + 99)},
        Kind.DESTROY,
        Reason.FILE_REMOVED,
    ),
    (
        "removed after the stack refused it: destroyed now",
        {"x": env("x")},
        {"pr1": applied(E, phase=Phase.FAILED, reason=Reason.SYNTH_FAILED, next_attempt_at=NOW + 1e9)},
        Kind.DESTROY,
        Reason.FILE_REMOVED,
    ),
    (
        "removed, its destroy failed: waits",
        {"x": env("x")},
        {"pr1": applied(E, phase=Phase.FAILED, reason=Reason.DESTROY_FAILED, next_attempt_at=NOW + 99)},
        Kind.WAIT,
        Reason.BACKOFF,
    ),
    ("invalid after apply", {"pr1": BAD}, {"pr1": applied(E)}, Kind.RECORD, Phase.INVALID),
    (
        "removed after a failed first apply, then invalid: what it left is destroyed",
        {"x": env("x")},
        {"pr1": applied(E, phase=Phase.INVALID, applied_digest="", attempted_digest=digest(E, VERSION))},
        Kind.DESTROY,
        Reason.FILE_REMOVED,
    ),
    (
        "removed, never attempted",
        {"x": env("x")},
        {"pr1": applied(E, phase=Phase.INVALID, applied_digest="")},
        Kind.RECORD,
        Phase.DESTROYED,
    ),
    (
        "invalid, already recorded",
        {"pr1": BAD},
        {"pr1": applied(E, phase=Phase.INVALID, message=BAD.message)},
        Kind.NOTHING,
        None,
    ),
]


@pytest.mark.parametrize(("what", "desired", "recorded", "kind", "detail"), TABLE)
def test_table(what, desired, recorded, kind, detail):
    """Each row: the decision for pr1 given what is desired and recorded."""
    actions = decide(desired, recorded, NOW, stack_version=VERSION, max_destroys=5)
    action = next(a for a in actions if a.name == "pr1")
    assert action.kind is kind, what
    if isinstance(detail, Phase):
        assert action.phase is detail, what
    elif detail is not None:
        assert action.reason == detail, what


def test_invalid_file_never_destroys_even_if_applied():
    """A parse failure of an applied environment is recorded, not acted on."""
    action = one({"pr1": BAD}, {"pr1": applied(E)})
    assert action.kind is Kind.RECORD and action.phase is Phase.INVALID
    assert action.message == BAD.message


def test_persistent_removed_is_orphaned_once():
    """A removed persistent file becomes Orphaned, and stays so without new actions."""
    desired = {"other": env("other")}
    first = decide(
        desired,
        {"staging": applied(STAGING), "other": applied(env("other"))},
        NOW,
        stack_version=VERSION,
        max_destroys=5,
    )
    staging = next(a for a in first if a.name == "staging")
    assert (staging.kind, staging.phase) == (Kind.RECORD, Phase.ORPHANED)
    again = decide(
        desired,
        {"staging": applied(STAGING, phase=Phase.ORPHANED), "other": applied(env("other"))},
        NOW,
        stack_version=VERSION,
        max_destroys=5,
    )
    assert {a.name: a.kind for a in again} == {"staging": Kind.NOTHING, "other": Kind.NOTHING}


def test_removed_file_with_no_resources_is_just_forgotten():
    """A removed file whose environment never applied is recorded Destroyed without Terraform."""
    actions = decide(
        {"x": env("x")},
        {"pr1": Record("pr1", phase=Phase.INVALID), "x": applied(env("x"))},
        NOW,
        stack_version=VERSION,
        max_destroys=5,
    )
    pr1 = next(a for a in actions if a.name == "pr1")
    assert (pr1.kind, pr1.phase) == (Kind.RECORD, Phase.DESTROYED)


def test_persistent_with_destroy_deletion_is_held_until_confirmed_on_removal():
    """deletion: destroy on a persistent environment makes removal a destroy, after a confirmation."""
    staging = env("staging", kind="persistent", deletion="destroy")
    recorded = {"staging": applied(staging), "x": applied(env("x"))}
    actions = {
        a.name: a for a in decide({"x": env("x")}, recorded, NOW, stack_version=VERSION, max_destroys=5)
    }
    assert (actions["staging"].kind, actions["staging"].reason) == (Kind.RECORD, Reason.PERSISTENT)
    assert actions["staging"].phase is Phase.DESTROY_HELD
    recorded["staging"].destroy_confirmed = True
    confirmed = decide({"x": env("x")}, recorded, NOW, stack_version=VERSION, max_destroys=5)
    assert next(a for a in confirmed if a.name == "staging").kind is Kind.DESTROY


@pytest.mark.parametrize(
    "now_says",
    [
        env("staging", kind="preview", state="closed"),
        env("staging", kind="preview", state="open"),
        None,
    ],
    ids=["flipped to a closed preview", "flipped to an open preview", "file removed"],
)
def test_an_environment_last_applied_as_persistent_is_never_destroyed_implicitly(now_says):
    """Whatever the file says now, a persistent environment's destroy waits for a confirmation."""
    staging = env("staging", kind="persistent", deletion="destroy")
    record = applied(staging, applied_kind="persistent")
    desired = {"staging": now_says} if now_says is not None else {"other": env("other")}
    recorded = {"staging": record}
    if now_says is None:
        recorded["other"] = applied(env("other"))
    action = next(
        a
        for a in decide(desired, recorded, NOW, stack_version=VERSION, max_destroys=5)
        if a.name == "staging"
    )
    # A kind flip (open or closed) is held before it applies; a removed file's destroy is held.
    reason = Reason.PERSISTENT if now_says is None else Reason.KIND_CHANGE
    assert (action.kind, action.phase, action.reason) == (Kind.RECORD, Phase.DESTROY_HELD, reason)
    assert "envctl destroy staging --confirm" in action.message
    record.phase, record.reason = Phase.DESTROY_HELD, reason
    again = next(
        a
        for a in decide(desired, recorded, NOW, stack_version=VERSION, max_destroys=5)
        if a.name == "staging"
    )
    assert again.kind is Kind.NOTHING


def test_stack_upgrade_reapplies_everything():
    """A new stack version changes every digest, so every environment is applied again."""
    desired = {"pr1": E, "staging": STAGING}
    recorded = {"pr1": applied(E), "staging": applied(STAGING)}
    same = decide(desired, recorded, NOW, stack_version=VERSION, max_destroys=5)
    assert {a.kind for a in same} == {Kind.NOTHING}
    upgraded = decide(desired, recorded, NOW, stack_version="v2", max_destroys=5)
    assert {a.kind for a in upgraded} == {Kind.APPLY}


def test_digest_ignores_the_file_name_but_not_the_spec():
    """Renaming pr1.yaml to pr1.yml re-applies nothing; changing a parameter does."""
    renamed = Environment(**{**E.spec(), "file": "environments/pr1.yml"})
    assert digest(renamed, VERSION) == digest(E, VERSION)
    assert digest(env(size="l"), VERSION) != digest(E, VERSION)


def fleet(count: int) -> dict[str, Record]:
    return {f"pr{i}": applied(env(f"pr{i}")) for i in range(count)}


def test_destroys_over_the_limit_are_all_held():
    """More removals than the limit: none destroyed, all held with the SafetyLimit reason."""
    recorded = fleet(6)
    recorded["staging"] = applied(STAGING)
    actions = decide({"staging": STAGING}, recorded, NOW, stack_version=VERSION, max_destroys=5)
    held = [a for a in actions if a.name != "staging"]
    assert all(a.kind is Kind.RECORD and a.phase is Phase.DESTROY_HELD for a in held)
    assert all(a.reason == Reason.SAFETY_LIMIT for a in held)
    assert "would destroy 6 environments" in held[0].message


def test_destroys_at_the_limit_go_ahead():
    """Exactly the limit is allowed."""
    recorded = fleet(5)
    recorded["staging"] = applied(STAGING)
    actions = decide({"staging": STAGING}, recorded, NOW, stack_version=VERSION, max_destroys=5)
    assert sum(a.kind is Kind.DESTROY for a in actions) == 5


def test_confirmed_destroys_bypass_the_limit_and_held_ones_stay_held():
    """A confirmed destroy goes; held ones stay held (not re-recorded); held ones do not count
    against the limit, so the four new removals (under a limit of 5) go."""
    recorded = fleet(7)
    recorded["staging"] = applied(STAGING)
    recorded["pr0"].destroy_confirmed = True
    for name in ("pr1", "pr2"):
        recorded[name].phase = Phase.DESTROY_HELD
        recorded[name].reason = Reason.SAFETY_LIMIT
    actions = {
        a.name: a for a in decide({"staging": STAGING}, recorded, NOW, stack_version=VERSION, max_destroys=5)
    }
    assert actions["pr0"].kind is Kind.DESTROY
    assert actions["pr1"].kind is Kind.NOTHING and actions["pr2"].kind is Kind.NOTHING
    assert [n for n in ("pr3", "pr4", "pr5", "pr6") if actions[n].kind is Kind.DESTROY] == [
        "pr3",
        "pr4",
        "pr5",
        "pr6",
    ]


def test_six_held_destroys_do_not_hold_an_expired_preview():
    """A forgotten held batch of six stays held while a seventh preview's TTL expiry is destroyed."""
    recorded = held_fleet(6)
    late = env("pr9")
    recorded["pr9"] = applied(late)
    actions = {
        a.name: a
        for a in decide(
            {"pr9": late}, recorded, NOW, stack_version=VERSION, max_destroys=5, expired=frozenset({"pr9"})
        )
    }
    assert (actions["pr9"].kind, actions["pr9"].reason) == (Kind.DESTROY, Reason.EXPIRED)
    assert all(actions[f"pr{n}"].kind is Kind.NOTHING for n in range(6))


@pytest.mark.parametrize(("destroyed", "new", "kind"), [(17, 3, Kind.DESTROY), (18, 3, Kind.RECORD)])
def test_the_hourly_budget_holds_new_destroys_beyond_it(destroyed, new, kind):
    """Destroys started in the last hour plus this pass's over safety.max_destroys_per_hour: held."""
    recorded = fleet(new)
    recorded["keep"] = applied(env("keep"))
    actions = decide(
        {"keep": env("keep")},
        recorded,
        NOW,
        stack_version=VERSION,
        max_destroys=5,
        max_destroys_per_hour=20,
        destroyed_last_hour=destroyed,
    )
    actions = [a for a in actions if a.name != "keep"]
    assert {a.kind for a in actions} == {kind}
    if kind is Kind.RECORD:
        assert all(a.reason == Reason.SAFETY_LIMIT for a in actions)
        assert "2 destroys of safety.max_destroys_per_hour are left this hour" in actions[0].message
        assert "envctl destroy pr0 pr1 pr2 --confirm" in actions[0].message


def held_fleet(count: int) -> dict[str, Record]:
    recorded = fleet(count)
    for record in recorded.values():
        record.phase, record.reason, record.message = Phase.DESTROY_HELD, Reason.SAFETY_LIMIT, "held"
    return recorded


@pytest.mark.parametrize(("held", "limit"), [(6, 5), (3, 2)])
def test_one_confirmation_releases_exactly_one_held_destroy(held, limit):
    """Confirming one of a held batch destroys it alone; the others stay held pass after pass."""
    recorded = held_fleet(held)
    recorded["pr0"].destroy_confirmed = True
    expected = ["pr0"]
    for _ in range(3):
        actions = {a.name: a for a in decide({}, recorded, NOW, stack_version=VERSION, max_destroys=limit)}
        assert [n for n, a in actions.items() if a.kind is Kind.DESTROY] == expected
        assert all(a.kind is Kind.NOTHING for n, a in actions.items() if n != "pr0")
        # The destroy consumed its confirmation and the environment is gone; nothing else follows.
        recorded.pop("pr0", None)
        expected = []


def test_retrying_destroys_count_against_the_limit_and_held_ones_do_not():
    """One retrying destroy and one new one pass a limit of 2 and are over a limit of 1; two held
    destroys count for neither."""
    recorded = held_fleet(2)
    recorded["pr2"] = applied(
        env("pr2"), phase=Phase.FAILED, reason=Reason.DESTROY_FAILED, next_attempt_at=NOW + 60
    )
    recorded["pr3"] = applied(env("pr3"))
    recorded["keep"] = applied(env("keep"))
    tight = {
        a.name: a for a in decide({"keep": env("keep")}, recorded, NOW, stack_version=VERSION, max_destroys=1)
    }
    assert tight["pr2"].kind is Kind.WAIT
    assert (tight["pr3"].kind, tight["pr3"].reason) == (Kind.RECORD, Reason.SAFETY_LIMIT)
    assert "destroy 1 environment, and 1 more wait for a retry" in tight["pr3"].message
    assert "envctl destroy pr3 --confirm" in tight["pr3"].message
    roomy = {
        a.name: a for a in decide({"keep": env("keep")}, recorded, NOW, stack_version=VERSION, max_destroys=2)
    }
    assert roomy["pr3"].kind is Kind.DESTROY


def test_empty_listing_destroys_nothing():
    """No files at all: file removals are held as EmptyListing; a closed-preview-free world is safe."""
    actions = decide({}, fleet(2), NOW, stack_version=VERSION, max_destroys=5)
    assert {(a.kind, a.reason) for a in actions} == {(Kind.RECORD, Reason.EMPTY_LISTING)}


def test_zero_limit_holds_every_destroy():
    """max_destroys_per_pass=0 means every destroy needs confirmation."""
    action = one({"pr1": CLOSED}, {"pr1": applied(E)}, max_destroys=0)
    assert action.phase is Phase.DESTROY_HELD


def test_live_covers_attempted_and_applied():
    """Resources may exist after an apply or an attempt, and not after a destroy."""
    assert Record("a", applied_digest="x").live
    assert Record("a", phase=Phase.FAILED).live
    assert not Record("a", phase=Phase.PENDING).live
    assert not Record("a", phase=Phase.DESTROYED, applied_digest="x").live


def test_expired_previews_are_destroyed_once_and_stay_gone():
    """A preview past its TTL is destroyed (Expired); once destroyed, nothing more; persistent never."""
    action = decide(
        {"pr1": E},
        {"pr1": applied(E)},
        NOW,
        stack_version=VERSION,
        max_destroys=5,
        expired=frozenset({"pr1"}),
    )[0]
    assert (action.kind, action.reason) == (Kind.DESTROY, Reason.EXPIRED)
    gone = decide(
        {"pr1": E},
        {"pr1": applied(E, phase=Phase.DESTROYED)},
        NOW,
        stack_version=VERSION,
        max_destroys=5,
        expired=frozenset({"pr1"}),
    )[0]
    assert gone.kind is Kind.NOTHING
    staging = decide(
        {"staging": STAGING},
        {"staging": applied(STAGING)},
        NOW,
        stack_version=VERSION,
        max_destroys=5,
        expired=frozenset({"staging"}),
    )[0]
    assert staging.kind is Kind.NOTHING


def test_watch_settings_do_not_change_the_digest():
    """Changing the drift interval, remediation or TTL re-applies nothing."""
    watched = Environment(
        **{**E.spec(), "drift_interval_minutes": 5.0, "remediation": "alert", "ttl_seconds": 60.0}
    )
    assert digest(watched, VERSION) == digest(E, VERSION)


def test_no_hold_or_invalid_is_recorded_over_a_run_under_way():
    """An empty listing or an invalid file seen while pr1 applies waits for the run's own outcome."""
    running = {"pr1": applied(E, phase=Phase.APPLYING, attempted_digest="older")}
    assert (one({}, running).kind, one({}, running).reason) == (Kind.WAIT, Reason.IN_PROGRESS)
    assert one({"pr1": BAD}, running).kind is Kind.WAIT
    # Once the run has ended, the same listing is held as before.
    ended = {"pr1": applied(E)}
    assert (one({}, ended).kind, one({}, ended).phase) == (Kind.RECORD, Phase.DESTROY_HELD)


@pytest.mark.parametrize(
    ("phase", "stalled_action", "expected"),
    [
        (Phase.DESTROY_HELD, "", True),
        (Phase.STALLED, "destroy", True),
        (Phase.STALLED, "apply", False),
        (Phase.FAILED, "", False),
        (Phase.READY, "", False),
        (Phase.DESTROYING, "", False),
    ],
)
def test_only_a_held_or_stalled_destroy_awaits_confirmation(phase, stalled_action, expected):
    """`envctl destroy --confirm` may release a held destroy or a stalled one, nothing else."""
    from controller.planner import awaits_confirmation

    assert awaits_confirmation(applied(E, phase=phase, stalled_action=stalled_action)) is expected


def test_the_confirm_command_names_the_environments():
    """Held messages name the exact command; a long batch is cut at ten names."""
    from controller.planner import confirm_command

    assert confirm_command(["pr1", "pr2"]) == "envctl destroy pr1 pr2 --confirm"
    many = confirm_command([f"pr{i}" for i in range(12)])
    assert many == "envctl destroy " + " ".join(f"pr{i}" for i in range(10)) + " ... --confirm"


def test_a_kind_flip_away_from_persistent_is_held_and_the_next_commit_cannot_destroy_it():
    """staging applied as persistent: `kind: preview` is held (nothing applied), and a following
    `state: closed` still destroys nothing; a confirmation lets the change through."""
    record = applied(STAGING, applied_kind="persistent")
    flipped = env("staging", kind="preview")
    first = one({"staging": flipped}, {"staging": record})
    assert (first.kind, first.phase, first.reason) == (Kind.RECORD, Phase.DESTROY_HELD, Reason.KIND_CHANGE)
    assert "envctl destroy staging --confirm" in first.message
    held = applied(STAGING, applied_kind="persistent", phase=Phase.DESTROY_HELD, reason=Reason.KIND_CHANGE)
    assert one({"staging": flipped}, {"staging": held}).kind is Kind.NOTHING
    closed = env("staging", kind="preview", state="closed")
    assert one({"staging": closed}, {"staging": held}).kind is Kind.NOTHING
    assert one({}, {"staging": held}).kind is not Kind.DESTROY
    confirmed = applied(STAGING, applied_kind="persistent", phase=Phase.DESTROY_HELD, destroy_confirmed=True)
    assert one({"staging": flipped}, {"staging": confirmed}).kind is Kind.APPLY
    # Back to persistent: applied (nothing to confirm).
    assert one({"staging": STAGING}, {"staging": held}).kind is Kind.APPLY
