"""Pure decisions: desired environments + recorded status + now -> what to do with each.

Level-based: every pass looks at the whole desired and recorded state, never at
events. Nothing here touches the world, so it is tested as a table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.types import Environment, Invalid, Phase, Reason, Record


class Kind(StrEnum):
    """What the reconciler does with one environment."""

    APPLY = "apply"
    DESTROY = "destroy"
    RECORD = "record"
    """Only write a phase and message; start no process."""
    WAIT = "wait"
    """A failed environment still inside its backoff."""
    NOTHING = "nothing"


@dataclass(frozen=True)
class Action:
    """One decision."""

    name: str
    kind: Kind
    reason: str = ""
    message: str = ""
    phase: Phase | None = None
    """Target phase of a RECORD."""
    environment: Environment | None = None
    """What to apply, or what to destroy (the last valid spec when the file is gone)."""
    digest: str = ""
    """Digest of what is applied; compared with the record next pass."""


def digest(environment: Environment, stack_version: str) -> str:
    """Identity of what an apply would produce: the spec (not its file name) and the stack code."""
    spec = environment.spec()
    # How the environment is watched (drift, TTL) and named on disk does not change what is applied.
    for key in ("file", "drift_interval_minutes", "remediation", "ttl_seconds"):
        spec.pop(key)
    if spec["commit"] is None:
        spec.pop("commit")  # files without one keep the digest they had before `commit` existed
    blob = json.dumps({"spec": spec, "stack": stack_version}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def decide(
    desired: Mapping[str, Environment | Invalid],
    recorded: Mapping[str, Record],
    now: float,
    *,
    stack_version: str,
    max_destroys: int,
    expired: frozenset[str] = frozenset(),
    max_destroys_per_hour: int | None = None,
    destroyed_last_hour: int = 0,
) -> list[Action]:
    """Decide every environment of the union of desired and recorded, in name order.

    `expired` names previews whose TTL has run out at this revision; `destroyed_last_hour` counts
    the destroys started in the last hour, against `max_destroys_per_hour` (None: no budget).
    """
    actions = [
        _decide_one(
            name,
            desired.get(name),
            recorded.get(name),
            now=now,
            stack_version=stack_version,
            expired=name in expired,
        )
        for name in sorted(set(desired) | set(recorded))
    ]
    budget = None if max_destroys_per_hour is None else max_destroys_per_hour - destroyed_last_hour
    limited = _limit_destroys(actions, desired, recorded, max_destroys, budget)
    # While a run is under way its phase comes from the run: a hold or an Invalid decided now is
    # recorded by the first pass after it ends.
    return [
        Action(a.name, Kind.WAIT, Reason.IN_PROGRESS)
        if a.kind is Kind.RECORD and a.name in recorded and recorded[a.name].phase in RUNNING
        else a
        for a in limited
    ]


def _decide_one(  # noqa: PLR0911, PLR0912 - the decision table: one guard clause per rule, in order
    name: str,
    wanted: Environment | Invalid | None,
    record: Record | None,
    *,
    now: float,
    stack_version: str,
    expired: bool,
) -> Action:
    # An invalid file is reported, never acted on: whatever exists stays.
    if isinstance(wanted, Invalid):
        if record is not None and record.phase is Phase.INVALID and record.message == wanted.message:
            return Action(name, Kind.NOTHING)
        return Action(name, Kind.RECORD, Reason.INVALID_SPEC, wanted.message, Phase.INVALID)

    # Applied as persistent: a file that now says otherwise changes nothing until a person
    # confirms (a kind change is the first of two commits that would destroy it).
    if (
        wanted is not None
        and wanted.kind != "persistent"
        and record is not None
        and record.live
        and record.last_applied_kind == "persistent"
        and not record.destroy_confirmed
    ):
        if record.phase is Phase.DESTROY_HELD and record.reason == Reason.KIND_CHANGE:
            return Action(name, Kind.NOTHING)
        message = (
            f"{name} was applied as a persistent environment; its file now says kind: {wanted.kind}, "
            "which would make it destroyable by a later commit. Nothing is applied until a person "
            f"confirms with `envctl destroy {name} --confirm` (then it is applied as a {wanted.kind}), "
            "or the file says kind: persistent again"
        )
        return Action(name, Kind.RECORD, Reason.KIND_CHANGE, message, Phase.DESTROY_HELD, environment=wanted)

    # A closed preview goes away; if nothing was ever applied there is nothing to run.
    if wanted is not None and wanted.kind == "preview" and wanted.state == "closed":
        return _remove(name, record, wanted, Reason.PULL_REQUEST_CLOSED, now)

    # A preview past its TTL goes away like a closed one, until a new commit to its file.
    if wanted is not None and wanted.kind == "preview" and expired:
        return _remove(name, record, wanted, Reason.EXPIRED, now)

    # An open environment is applied unless what was applied is exactly this.
    if wanted is not None:
        wanted_digest = digest(wanted, stack_version)
        if record is not None and record.phase is Phase.READY and record.applied_digest == wanted_digest:
            return Action(name, Kind.NOTHING)
        if record is not None and _stalled(record, now, "apply", wanted_digest):
            return Action(name, Kind.WAIT, record.reason)
        # This very digest is being applied: its outcome is not known yet, so nothing is queued
        # (a failure then waits its backoff; a success is Ready). A changed file queues at once.
        if (
            _running(record, Phase.APPLYING)
            and record is not None
            and record.attempted_digest == wanted_digest
        ):
            return Action(name, Kind.WAIT, Reason.IN_PROGRESS)
        if _backing_off(record, now) and record is not None and record.attempted_digest == wanted_digest:
            return Action(name, Kind.WAIT, Reason.BACKOFF)
        return Action(name, Kind.APPLY, environment=wanted, digest=wanted_digest)

    # The file is gone (so a record exists: names come from both): the last valid spec says
    # whether that destroys or orphans.
    assert record is not None
    if record.phase is Phase.DESTROYED:
        return Action(name, Kind.NOTHING)
    last = Environment.from_spec(record.spec) if record.spec else None
    if last is None or last.deletion == "orphan":
        if record.phase is Phase.ORPHANED:
            return Action(name, Kind.NOTHING)
        if not record.live:
            return Action(
                name, Kind.RECORD, Reason.FILE_REMOVED, "file removed; nothing was applied", Phase.DESTROYED
            )
        return Action(
            name,
            Kind.RECORD,
            Reason.ORPHANED,
            "file removed; deletion is orphan, so its resources were left in place",
            Phase.ORPHANED,
        )
    return _remove(name, record, last, Reason.FILE_REMOVED, now)


def _remove(name: str, record: Record | None, last: Environment, reason: Reason, now: float) -> Action:  # noqa: PLR0911 - one guard clause per rule of a removal
    """Destroy what may exist, or record that nothing does."""
    if record is None or not record.live:
        if record is not None and record.phase is Phase.DESTROYED:
            return Action(name, Kind.NOTHING)
        return Action(name, Kind.RECORD, Reason.NEVER_APPLIED, "nothing was applied", Phase.DESTROYED)
    # Applied as persistent: no file change (kind flipped, closed, removed) destroys it implicitly.
    if record.last_applied_kind == "persistent" and not record.destroy_confirmed:
        if record.phase is Phase.DESTROY_HELD and record.reason == Reason.PERSISTENT:
            return Action(name, Kind.NOTHING)
        message = (
            f"{name} was last applied as a persistent environment; its file now asks for a destroy "
            f"({reason}), which needs a person: `envctl destroy {name} --confirm`, or restore the file"
        )
        return Action(name, Kind.RECORD, Reason.PERSISTENT, message, Phase.DESTROY_HELD, environment=last)
    # A destroy under way: its outcome decides what comes next.
    if _running(record, Phase.DESTROYING):
        return Action(name, Kind.WAIT, Reason.IN_PROGRESS)
    # Stalled until a person acts; a confirmation retries at once.
    if _stalled(record, now, "destroy") and not record.destroy_confirmed:
        return Action(name, Kind.WAIT, record.reason)
    # A failed destroy waits for its backoff; a failed apply does not hold up the removal.
    if _backing_off(record, now) and record.reason not in (Reason.APPLY_FAILED, Reason.SYNTH_FAILED):
        return Action(name, Kind.WAIT, Reason.BACKOFF)
    return Action(name, Kind.DESTROY, reason, environment=last)


def _stalled(record: Record, now: float, action: str, wanted_digest: str | None = None) -> bool:
    """Whether `action` on a Stalled environment still waits: for a person (a changed file, a
    confirmation), or, for a state that could not be uploaded, for its next retry."""
    if record.phase is not Phase.STALLED:
        return False
    if record.reason != Reason.STATE_NOT_PERSISTED and record.stalled_action != action:
        return False
    if record.reason == Reason.STATE_NOT_PERSISTED:
        return now < record.next_attempt_at
    return wanted_digest is None or record.attempted_digest == wanted_digest


RUNNING = (Phase.APPLYING, Phase.DESTROYING)
"""Phases a run sets while it runs (a crash's leftover is turned to Failed at start)."""


def _running(record: Record | None, phase: Phase) -> bool:
    """A run that sets `phase` is under way (a crash's leftover is turned to Failed at start)."""
    return record is not None and record.phase is phase


def _backing_off(record: Record | None, now: float) -> bool:
    return record is not None and record.phase is Phase.FAILED and now < record.next_attempt_at


def _limit_destroys(
    actions: list[Action],
    desired: Mapping[str, Any],
    recorded: Mapping[str, Record],
    max_destroys: int,
    budget: int | None = None,
) -> list[Action]:
    """Hold destroys an empty listing, the per-pass limit or the hourly budget makes suspicious.

    A held destroy stays held until it is confirmed itself (or its file comes back): releasing
    one never releases the others. Held destroys do not count against the limit: a forgotten
    held batch never holds up a destroy decided later for its own reason (an expiry, one closed
    preview). The limit counts the destroys about to run: this pass's new ones and those waiting
    for a retry; `budget` (what is left of safety.max_destroys_per_hour) guards against a mass
    deletion spread over many passes. Confirmed destroys count against neither.
    """
    # Long on purpose: the holds are one decision over the whole batch (held before, empty
    # listing, per pass, per hour), read top to bottom; split, the order of the guards would hide.
    unconfirmed = [a for a in actions if a.kind is Kind.DESTROY and not recorded[a.name].destroy_confirmed]
    if not unconfirmed:
        return actions
    held: dict[str, tuple[Reason, str]] = {}
    # Held before: still held, for the reason it was held for.
    for action in unconfirmed:
        record = recorded[action.name]
        if record.phase is Phase.DESTROY_HELD:
            held[action.name] = (Reason(record.reason), record.message)
    removed = [a for a in unconfirmed if a.reason == Reason.FILE_REMOVED and a.name not in held]
    if not desired and removed:
        # An empty listing looks like a broken checkout or a wrong path, not like intent.
        names = [a.name for a in removed]
        message = (
            f"the environments folder lists no files; {_count(len(removed), 'destroy')} held (confirm with "
            f"`{confirm_command(names)}`)"
        )
        held.update({a.name: (Reason.EMPTY_LISTING, message) for a in removed})
    new = [a for a in unconfirmed if a.name not in held]
    waiting = sum(
        1 for a in actions if a.kind is Kind.WAIT and recorded[a.name].reason == Reason.DESTROY_FAILED
    )
    names = [a.name for a in new]
    if new and len(new) + waiting > max_destroys:
        retrying = f", and {waiting} more wait for a retry" if waiting else ""
        message = (
            f"this pass would destroy {_count(len(new), 'environment')}{retrying}: over "
            f"safety.max_destroys_per_pass={max_destroys}; none of them destroyed (confirm with "
            f"`{confirm_command(names)}`, or raise the limit)"
        )
        held.update({a.name: (Reason.SAFETY_LIMIT, message) for a in new})
    elif new and budget is not None and len(new) > budget:
        message = (
            f"this pass would destroy {_count(len(new), 'environment')}, and "
            f"{_count(max(budget, 0), 'destroy')} of safety.max_destroys_per_hour are left this "
            f"hour; none of them destroyed (confirm with `{confirm_command(names)}`, or raise the limit)"
        )
        held.update({a.name: (Reason.SAFETY_LIMIT, message) for a in new})
    result = []
    for action in actions:
        if action.name not in held:
            result.append(action)
            continue
        reason, message = held[action.name]
        record = recorded[action.name]
        # `or` (a mutant) differs only for a record with a hold's reason outside DestroyHeld, which
        # no run writes (a hold's reasons are only ever recorded with that phase).
        if record.phase is Phase.DESTROY_HELD and record.reason == reason:  # pragma: no mutate
            result.append(Action(action.name, Kind.NOTHING))
        else:
            result.append(
                Action(
                    action.name,
                    Kind.RECORD,
                    reason,
                    message,
                    Phase.DESTROY_HELD,
                    environment=action.environment,
                )
            )
    return result


def awaits_confirmation(record: Record) -> bool:
    """Whether `record` waits for a person's confirmation of its destroy: held, or stalled while
    destroying. Nothing else can be confirmed (a stalled apply is fixed in its file)."""
    if record.phase is Phase.DESTROY_HELD:
        return True
    return record.phase is Phase.STALLED and record.stalled_action == "destroy"


def confirm_command(names: list[str]) -> str:
    """The command that confirms exactly these held destroys."""
    shown = names if len(names) <= 10 else [*names[:10], "..."]
    return f"envctl destroy {' '.join(shown)} --confirm"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
