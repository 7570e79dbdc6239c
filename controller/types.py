"""Plain types shared by the planner, the store and the reconciler (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """Where an environment stands; one per record."""

    PENDING = "Pending"
    APPLYING = "Applying"
    READY = "Ready"
    FAILED = "Failed"
    INVALID = "Invalid"
    DESTROYING = "Destroying"
    DESTROYED = "Destroyed"
    ORPHANED = "Orphaned"
    DESTROY_HELD = "DestroyHeld"
    STALLED = "Stalled"
    """Cannot proceed without a person: the reason and message say what to do."""


class Reason(StrEnum):
    """PascalCase reasons recorded with a phase; every condition string lives here."""

    APPLIED = "Applied"
    UP_TO_DATE = "UpToDate"
    APPLY_FAILED = "ApplyFailed"
    DESTROY_FAILED = "DestroyFailed"
    DESTROYED = "Destroyed"
    PULL_REQUEST_CLOSED = "PullRequestClosed"
    FILE_REMOVED = "FileRemoved"
    ORPHANED = "FileRemovedOrphaned"
    INVALID_SPEC = "InvalidSpec"
    SYNTH_FAILED = "SynthFailed"
    SAFETY_LIMIT = "SafetyLimit"
    EMPTY_LISTING = "EmptyListing"
    LOCKED = "StateLocked"
    INTERRUPTED = "Interrupted"
    BACKOFF = "Backoff"
    IN_PROGRESS = "InProgress"
    """A decision waits for the outcome of the run already under way."""
    NEVER_APPLIED = "NeverApplied"
    EXPIRED = "Expired"
    DRIFT_REPAIRED = "DriftRepaired"
    ADOPTED = "AdoptedFromInventory"
    PERSISTENT = "PersistentNeedsConfirmation"
    KIND_CHANGE = "KindChangeNeedsConfirmation"
    """A file changed the kind of an environment applied as persistent."""
    OWNED_ELSEWHERE = "OwnedByAnotherRepository"
    CONFIG_CHANGED = "SavedConfigurationChanged"
    """The configuration kept for a destroy is not the one envctl saved."""
    STATE_MISSING = "StateObjectMissing"
    STACK_REJECTED = "StackRejected"
    STATE_NOT_PERSISTED = "StateNotPersisted"
    QUOTA_EXCEEDED = "QuotaExceeded"


@dataclass(frozen=True)
class Environment:
    """One validated environment file."""

    name: str
    kind: str
    """`preview` or `persistent`."""
    state: str
    """`open` or `closed`."""
    region: str
    deletion: str
    """What removing the file does: `destroy` or `orphan`."""
    file: str
    """Path of the file inside the repository."""
    pull_request: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    drift_interval_minutes: float | None = None
    """Drift check interval; None takes the settings' default."""
    remediation: str = ""
    """`auto` repairs drift, `alert` only reports it; "" takes the kind's default."""
    ttl_seconds: float | None = None
    """Previews only: destroyed this long after the last commit that changed the file."""
    commit: str | None = None
    """The pull request's head commit, written by the application's CI (deployments are per commit)."""

    @property
    def remediation_mode(self) -> str:
        return self.remediation or ("auto" if self.kind == "preview" else "alert")

    def spec(self) -> dict[str, Any]:
        """What the stack entry point receives, as plain JSON-able data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "region": self.region,
            "deletion": self.deletion,
            "pull_request": self.pull_request,
            "parameters": self.parameters,
            "file": self.file,
            "drift_interval_minutes": self.drift_interval_minutes,
            "remediation": self.remediation,
            "ttl_seconds": self.ttl_seconds,
            "commit": self.commit,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Environment:
        """The inverse of spec()."""
        return cls(**spec)


@dataclass(frozen=True)
class Invalid:
    """An environment file that failed validation, with the message saying why."""

    name: str
    file: str
    message: str


@dataclass
class Record:
    """What the status store knows about one environment."""

    name: str
    kind: str = ""
    phase: Phase = Phase.PENDING
    reason: str = ""
    message: str = ""
    revision: str = ""
    """Revision the environment was last acted on at."""
    applied_revision: str = ""
    applied_digest: str = ""
    """Digest of spec + stack version last applied successfully."""
    applied_kind: str = ""
    """The kind of the last successful apply: `persistent` ones are never destroyed implicitly."""
    config_digest: str = ""
    """sha256 of the configuration saved beside the state at the last apply (checked before a destroy)."""
    attempted_digest: str = ""
    """Digest of the last apply attempted; a failure waits for its backoff only while it is unchanged."""
    spec: dict[str, Any] | None = None
    """The last valid spec seen; used to destroy after the file is gone."""
    failures: int = 0
    next_attempt_at: float = 0.0
    destroy_confirmed: bool = False
    stalled_action: str = ""
    """`apply` or `destroy`: which work is Stalled (a removal proceeds past a stalled apply)."""
    updated_at: float = 0.0
    expires_at: float = 0.0
    """When a preview with a TTL expires (0: never)."""
    expiry_warned_for: float = 0.0
    """The expires_at a warning was sent for."""
    drift_status: str = ""
    """`InSync`, `Drifted` or `CheckFailed` after the last check."""
    drift_report: list[dict[str, Any]] = field(default_factory=list)
    drift_fingerprint: str = ""
    drift_first_seen: float = 0.0
    drift_checked_at: float = 0.0
    drift_alerted_at: float = 0.0
    drift_failures: int = 0
    drift_interval_seconds: float = 0.0
    """The drift check interval in effect while Ready (the file's, else the settings'); 0: none."""
    applied_at: float = 0.0
    """When the last apply (or repair) succeeded: drift checks count their interval from it."""
    lock_released: str = ""
    """What the last release of a lock one of envctl's own dead runs left says (alerted once)."""
    lock_released_id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)
    """The stack's outputs after the last apply (sensitive ones as "(sensitive)")."""
    deployment_id: str = ""
    """The GitHub/GitLab deployment showing this environment's current commit."""
    deployment_commit: str = ""
    deployment_url: str = ""
    """Where people see the deployment (the host's environment page)."""

    @property
    def last_applied_kind(self) -> str:
        """`applied_kind`, or for records written before it existed, the kind last recorded."""
        if self.applied_kind:
            return self.applied_kind
        return self.kind if self.applied_digest else ""

    @property
    def live(self) -> bool:
        """Whether resources may exist for this environment."""
        if self.phase is Phase.DESTROYED:
            return False
        # An apply attempted and not destroyed since may have left resources, even if it failed.
        return bool(self.applied_digest or self.attempted_digest) or self.phase in _ATTEMPTED


_ATTEMPTED = frozenset({Phase.APPLYING, Phase.FAILED, Phase.DESTROYING, Phase.DESTROY_HELD, Phase.STALLED})


@dataclass(frozen=True)
class Outcome:
    """What one run did: the record patch, the run row's outcome, and the queue's answer.

    A run returns this and never writes the record; the queue worker writes the patch and the
    run row once, in one transaction, then hands (before, after) to `status.transitions`.
    """

    result: str
    """What the queue reports: `applied`, `unchanged`, `destroyed`, `failed`, `in_sync`, ..."""
    changes: dict[str, Any]
    """The record patch."""
    run_outcome: str
    """The run row's outcome: `succeeded`, `failed`, `interrupted`, `in_sync`, `drifted`."""
    message: str = ""
    repair: bool = False
    """A drift check whose inspected plan is to be applied next (the same workspace, in turn)."""


@dataclass(frozen=True)
class Run:
    """One Terraform action on one environment."""

    id: int
    name: str
    action: str
    revision: str
    started_at: float
    finished_at: float | None
    outcome: str | None
    message: str
    digest: str = ""
    """An apply's digest (spec + stack version): what is being applied."""
    kind: str = ""
    spec: str = ""
    """An apply's spec as JSON: what status shows while it runs."""


@dataclass(frozen=True)
class OutboxItem:
    """One update waiting to be shown on a git host (see controller.feedback)."""

    id: int
    target: str
    name: str
    payload: str
    attempts: int
    next_at: float
