"""One reconcile pass: fetch, read desired, decide, execute, record.

Every step fails the same way: the error becomes a recorded outcome on the
environment (phase, reason, message, backoff), never an exception out of the
pass. A source failure ends the pass before any decision, so nothing is ever
destroyed because git was unreachable.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import structlog

from controller import drift, metrics
from controller.alerts import Alert, Alerts, Event
from controller.backend import backend_block, env_dir
from controller.environments import load_all
from controller.errors import (
    EnvctlError,
    Interrupted,
    PermanentError,
    SourceError,
    StalledError,
    StateLocked,
    TerraformError,
    TransientError,
)
from controller.expiry import expires_at, warn_expiring
from controller.inventory import Inventory
from controller.planner import Action, Kind, decide, digest
from controller.settings import Settings
from controller.source import GitSource, Revision
from controller.statefiles import StateFiles
from controller.status import transitions
from controller.store import Run, StatusStore
from controller.synth import Synthesized, SynthWorker, stack_version
from controller.terraform import TerraformRunner, lock_created, terraform_running_in
from controller.types import Environment, Invalid, Phase, Reason, Record
from controller.workqueue import WorkQueue

log = structlog.get_logger("envctl.reconciler")
APPLIED_MARKER = ".envctl-applied"
BATCH_HOLDS = (Reason.SAFETY_LIMIT, Reason.EMPTY_LISTING)
"""Holds decided for a whole batch of removals: alerted once for the batch."""
ERRORED_STATE = "errored.tfstate"
"""What Terraform writes when it cannot upload the state it has."""
T = TypeVar("T")
MIN_TERRAFORM = (1, 6, 0)
"""The oldest Terraform envctl runs: the S3 backend's `endpoints` block and `use_path_style` are 1.6+."""


def _drift_cleared(status: str) -> dict[str, Any]:
    """Record fields of an environment with no drift (after a clean check, a repair, an apply)."""
    return {"drift_status": status, "drift_report": [], "drift_fingerprint": "", "drift_first_seen": 0.0}


@dataclass(frozen=True)
class Work:
    """A queued item: an apply or destroy decided at `revision`, or (no action) a drift check."""

    action: Action | None = None
    revision: Revision | None = None


def _keep_terraform_work(waiting: Work, new: Work) -> Work:
    """A drift check never displaces a waiting apply or destroy (which makes it moot)."""
    return waiting if new.action is None and waiting.action is not None else new


@dataclass
class PassResult:
    """What one pass did."""

    revision: str = ""
    error: str = ""
    actions: list[Action] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.outcomes.items() if outcome == "failed"]


class Reconciler:
    """Converges every environment of the repository; safe to call pass after pass."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: GitSource,
        synth: SynthWorker,
        terraform: TerraformRunner,
        store: StatusStore,
        state: StateFiles,
        alerts: Alerts | None = None,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.source = source
        self.synth = synth
        self.terraform = terraform
        self.store = store
        self.state = state
        self.alerts = alerts or Alerts.from_settings(settings.alerts)
        self.clock = clock
        self.jitter = jitter
        self.stack_version = stack_version(settings.stack)
        self._busy: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._slots = threading.BoundedSemaphore(settings.terraform.concurrency)
        """At most `concurrency` environments run Terraform at once, passes and drift checks together."""
        self._pass_lock = threading.Lock()
        self.queue: WorkQueue[Work] = WorkQueue(settings.terraform.concurrency, self._work)
        """Applies, destroys and the daemon's drift checks, one item per environment."""
        self.may_act: Callable[[], bool] = lambda: True
        """Whether this process may start Terraform now (the daemon: while it holds the lease)."""
        self.inventory = Inventory(settings, state, store, clock)

    # --- start ----------------------------------------------------------------------------------

    def check_terraform(self) -> tuple[int, int, int]:
        """The binary is a Terraform envctl supports, and reads the settings' backend arguments."""
        version = self.terraform.version()
        found = ".".join(map(str, version))
        if version < MIN_TERRAFORM:
            minimum = ".".join(map(str, MIN_TERRAFORM))
            raise PermanentError(
                f"{self.settings.source_file}: terraform.binary: {self.settings.terraform.binary!r} is "
                f"Terraform {found}; envctl needs Terraform {minimum} or newer (the S3 backend's "
                "`endpoints` block and `use_path_style`)"
            )
        if self.settings.state.lock == "s3" and version < (1, 10, 0):
            raise PermanentError(
                f"{self.settings.source_file}: state.lock: 's3' is not allowed with Terraform "
                f"{found}; expected dynamodb, or Terraform 1.10 or newer"
            )
        return version

    def recover(self) -> None:
        """Runs a crash or kill left open are recorded as interrupted; their environments resume."""
        for run in self.store.unfinished_runs():
            self.store.finish_run(run.id, "interrupted", "the controller stopped during this run")
            record = self.store.load(run.name)
            if record is not None and record.phase in (Phase.APPLYING, Phase.DESTROYING):
                self.store.update(
                    run.name,
                    phase=Phase.FAILED,
                    reason=Reason.INTERRUPTED,
                    message=f"{run.action} interrupted; resuming",
                    next_attempt_at=0.0,
                )

    # --- a pass ---------------------------------------------------------------------------------

    def run_pass(self, wait: bool = True) -> PassResult:
        """Fetch, decide and queue the work; never raises for one environment's failure.

        With `wait` (`envctl reconcile`, tests) it returns once the queued work is done, with
        every outcome; the daemon does not wait: a pass never waits for another environment's apply.
        """
        with self._pass_lock:
            started = time.monotonic()
            result = self._run_pass(wait)
            metrics.PASS_SECONDS.observe(time.monotonic() - started)
            metrics.PASSES.labels(
                "source_error" if result.error else "failed" if result.failed else "ok"
            ).inc()
            return result

    def _run_pass(self, wait: bool) -> PassResult:
        result = PassResult()
        # Fetch; an unreachable remote ends the pass and keeps the last good revision.
        try:
            revision = self.source.fetch()
        except SourceError as error:
            result.error = str(error)
            self.store.set_meta("source_error", str(error))
            if not self.store.get_meta("source_failing_since"):
                self.store.set_meta("source_failing_since", str(self.clock()))
            log.error("fetch_failed", error=str(error))
            return result
        result.revision = revision.sha
        self.store.set_meta("source_error", "")
        self.store.set_meta("source_failing_since", "")
        self.store.set_meta("last_revision", revision.sha)
        self.store.set_meta("last_fetch_at", str(self.clock()))

        # Read, adopt and decide; the planner never touches the world.
        actions, expires = self.decide(revision)
        result.actions = actions
        log.info(
            "pass_decided",
            revision=revision.short,
            **{kind.value: sum(a.kind is kind for a in actions) for kind in Kind},
        )

        # Record what needs no process; queue the rest, one item per environment.
        queued = []
        batch: list[Action] = []
        for action in actions:
            if action.kind is Kind.RECORD:
                if action.reason in BATCH_HOLDS:
                    batch.append(action)
                self._record(action, revision, alert=action.reason not in BATCH_HOLDS)
                result.outcomes[action.name] = action.phase.value if action.phase else "recorded"
            elif action.kind in (Kind.APPLY, Kind.DESTROY):
                self.queue.put(action.name, Work(action, revision), merge=_keep_terraform_work)
                queued.append(action.name)
        if batch:
            # One alert for a held batch, naming every environment, not one alert each.
            names = [a.name for a in batch]
            shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            self.alerts.emit(
                Alert(
                    Event.DESTROYS_HELD,
                    shown,
                    "preview",
                    batch[0].message,
                    {"environments": names, "reason": batch[0].reason},
                    at=self.clock(),
                )
            )
        if wait:
            result.outcomes.update(self.queue.wait(queued))
        else:
            result.outcomes.update(dict.fromkeys(queued, "queued"))

        # Record expiry times and warn about previews close to theirs.
        warn_expiring(
            self.store,
            self.alert,
            expires=expires,
            recorded=self.store.load_all(),
            now=self.clock(),
            previews=self.settings.previews,
        )
        return result

    def decide(self, revision: Revision) -> tuple[list[Action], dict[str, float]]:
        """Every environment's action at `revision`, and when previews with a TTL expire."""
        # Read and validate every environment file at that revision.
        desired = self.desired(revision)
        # Take in environments the state bucket's inventory knows and the status store does not.
        self.adopt()
        # Work out when previews with a TTL expire (from the last commit to their file).
        recorded = self.store.load_all()
        now = self.clock()
        expires = expires_at(
            desired, lambda: self.source.last_changes(revision), revision.committed_at, self.settings.previews
        )
        actions = decide(
            desired,
            recorded,
            now,
            stack_version=self.stack_version,
            max_destroys=self.settings.safety.max_destroys_per_pass,
            expired=frozenset(name for name, at in expires.items() if now >= at),
        )
        # How an unchanged environment is watched (drift interval and remediation, TTL) takes
        # effect now, without an apply: checks and schedules read the recorded spec.
        for action in actions:
            wanted = desired.get(action.name)
            record = recorded.get(action.name)
            unchanged = action.kind is Kind.NOTHING and isinstance(wanted, Environment)
            if unchanged and record is not None and record.phase is Phase.READY:
                assert isinstance(wanted, Environment)
                if record.spec != wanted.spec():
                    self.store.update(action.name, spec=wanted.spec())
                    log.info("watch_settings_changed", env=action.name)
        return actions, expires

    def desired(self, revision: Revision) -> dict[str, Environment | Invalid]:
        """Every environment file at `revision`, validated; settings.stack_parameters fill in defaults."""
        desired = load_all(self.source.files(revision), self.settings.default_region)
        defaults = self.settings.stack_parameters
        if not defaults:
            return desired
        return {
            name: replace(env, parameters={**defaults, **env.parameters})
            if isinstance(env, Environment)
            else env
            for name, env in desired.items()
        }

    def adopt(self) -> list[str]:
        """Records for what the inventory knows and the status store does not (see Inventory.adopt)."""
        return self.inventory.adopt()

    def _record(self, action: Action, revision: Revision, *, alert: bool = True) -> None:
        changes: dict[str, Any] = {
            "phase": action.phase,
            "reason": action.reason,
            "message": action.message,
            "revision": revision.sha,
        }
        if action.phase is Phase.DESTROYED:
            changes.update(applied_digest="", attempted_digest="", failures=0, next_attempt_at=0.0)
        record = self.store.update(action.name, **changes)
        event = {
            Phase.INVALID: Event.INVALID,
            Phase.ORPHANED: Event.ORPHANED,
            Phase.DESTROY_HELD: Event.DESTROYS_HELD,
        }.get(action.phase)  # type: ignore[arg-type]
        if event is not None and alert:
            self.alert(event, record, action.message)
        level = log.warning if action.phase in (Phase.ORPHANED, Phase.INVALID) else log.info
        if action.phase is Phase.DESTROY_HELD:
            level = log.error
        level(
            "environment_recorded",
            env=action.name,
            phase=str(record.phase),
            reason=action.reason,
            message=action.message,
            revision=revision.short,
        )

    # --- execution ------------------------------------------------------------------------------

    def _work(self, name: str, work: Work) -> str:
        """One queued item, acting on the latest recorded state (level-based)."""
        if work.action is None:
            return self.check_drift(name)
        record = self.store.load(name)
        action = work.action
        # Done meanwhile (an earlier item applied this very digest, or destroyed it): nothing to do.
        ready = record is not None and record.phase is Phase.READY
        if (
            action.kind is Kind.APPLY
            and ready
            and record is not None
            and record.applied_digest == action.digest
        ):
            return "unchanged"
        if action.kind is Kind.DESTROY and (record is None or record.phase is Phase.DESTROYED):
            return "destroyed"
        return self.execute(action, work.revision or Revision("", 0.0))

    def execute(self, action: Action, revision: Revision) -> str:
        """Apply or destroy one environment; the outcome is recorded, never raised."""
        try:
            return self._execute(action, revision)
        except Exception as error:  # a bug, OSError, sqlite: recorded on this environment, never raised
            log.exception("work_crashed", env=action.name, action=str(action.kind))
            return self._crashed(action, error)

    def _crashed(self, action: Action, error: Exception) -> str:
        """Record an unexpected exception as a failure with backoff; close the runs it left open."""
        for run in self.store.unfinished_runs():
            if run.name == action.name:
                self.store.finish_run(run.id, "failed", f"unexpected error: {error!r}")
        record = self.store.load(action.name)
        failures = (record.failures if record else 0) + 1
        updated = self.store.update(
            action.name,
            phase=Phase.FAILED,
            reason=Reason.APPLY_FAILED if action.kind is Kind.APPLY else Reason.DESTROY_FAILED,
            message=f"unexpected error (see the log for its traceback): {error!r}",
            failures=failures,
            next_attempt_at=self.clock() + self.backoff(failures),
        )
        for event in transitions(record, updated, str(action.kind)):
            self.alert(event, updated, updated.message)
        return "failed"

    def _execute(self, action: Action, revision: Revision) -> str:
        # Waits for a drift check of the same environment to end: never two runs at once.
        lock = self._busy[action.name]
        lock.acquire()
        try:
            assert action.environment is not None
            with self._slots:
                # Checked once a slot is free, right before Terraform starts: a leader whose lease
                # renewals stopped working may have queued this while it still led.
                if not self.may_act():
                    log.warning("work_not_started", env=action.name, reason="not the leader")
                    return "skipped"
                if action.kind is Kind.APPLY:
                    return self.apply(action.environment, revision, action.digest)
                return self.destroy(action.environment, revision, action.reason or Reason.FILE_REMOVED)
        finally:
            lock.release()

    def _preflight(self, env: Environment, run_id: int) -> None:
        """Checks before any Terraform run of `env`: ownership, no orphaned Terraform, no unsaved state."""
        name = env.name
        conflict = self.inventory.owner_conflict(name)
        if conflict is not None:
            raise StalledError(Reason.OWNED_ELSEWHERE, conflict)
        workdir = self._workdir(name)
        if workdir.exists() and terraform_running_in(workdir):
            raise TransientError(
                f"a Terraform process started by an earlier envctl still runs in {workdir}; "
                "waiting for it to finish (it releases its lock when it does)"
            )
        self._push_saved_state(env, run_id)

    def _keep_errored_state(self, name: str, error: TerraformError) -> EnvctlError:
        """After a failed run: a state Terraform could not upload is kept, and the error says so."""
        errored = self._workdir(name) / ERRORED_STATE
        if not errored.exists():
            return error
        where = "in the workdir"
        try:
            self.state.put(self.settings.state.errored_state_key(name), errored.read_bytes())
            where = f"at s3://{self.settings.state.bucket}/{self.settings.state.errored_state_key(name)}"
        except TransientError as problem:
            log.warning("errored_state_not_copied", env=name, error=str(problem))
        return StalledError(
            Reason.STATE_NOT_PERSISTED,
            f"state upload failed; the newer state is kept {where} and envctl will push it before any "
            f"other run of {name} (the next pass, a new commit or `envctl destroy {name} --confirm` "
            f"retries): {error}",
        )

    def _push_saved_state(self, env: Environment, run_id: int) -> None:
        """Push a state a failed upload left behind, before anything else runs against the older one."""
        name = env.name
        workdir = self._workdir(name)
        local = workdir / ERRORED_STATE
        key = self.settings.state.errored_state_key(name)
        saved = local.read_bytes() if local.exists() else self.state.get(key)
        if saved is None:
            return
        keep = self.settings.workdir / "errored-states" / f"{name}.tfstate"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(saved)
        self.prepare(env, fresh=True)
        self._releasing_dead_locks(
            name, lambda: self.terraform.state_push(workdir, keep, env=name, run_id=run_id)
        )
        log.warning("errored_state_pushed", env=name, key=key)
        self.state.remove(key)
        local.unlink(missing_ok=True)
        keep.unlink()

    def _releasing_dead_locks(self, name: str, run: Callable[[], T]) -> T:
        """Run Terraform steps; a lock one of envctl's own finished runs provably left is released once."""
        try:
            return run()
        except StateLocked as locked:
            run_info = self._run_that_left(name, locked)
            if run_info is None:
                raise
            self.terraform.force_unlock(self._workdir(name), locked.lock_id, env=name)
            started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run_info.started_at))
            message = (
                f"released the state lock {locked.lock_id} that envctl's own {run_info.action} run "
                f"{run_info.id} (started {started}) left behind when it stopped; its process is gone. "
                "Resuming"
            )
            log.warning("stale_lock_released", env=name, lock_id=locked.lock_id, run=run_info.id)
            record = self.store.load(name)
            if record is not None:
                self.alert(Event.LOCK_RELEASED, record, message, lock_id=locked.lock_id)
            return run()

    def _run_that_left(self, name: str, locked: StateLocked) -> Run | None:
        """The finished run of this environment, by this envctl, during which the lock was taken."""
        created = lock_created(locked.created)
        if locked.holder != self.terraform.identity or created is None:
            return None
        if terraform_running_in(self._workdir(name)):
            return None
        for run in self.store.runs(name, limit=50):
            if run.finished_at is not None and run.started_at - 1.0 <= created <= run.finished_at + 1.0:
                return run
        return None

    def _prepare_destroy(self, env: Environment, bound: Any) -> None:
        """The configuration of the last successful apply, else a fresh synth, initialized."""
        workdir = self._workdir(env.name)
        if workdir.exists():
            shutil.rmtree(workdir)
        saved = self.state.get(self.settings.state.config_key(env.name))
        if saved is None:
            bound.info("destroy_synthesizes", reason="no saved configuration")
            self.prepare(env)
            return
        workdir.mkdir(parents=True)
        (workdir / "main.tf.json").write_bytes(saved)
        self.terraform.init(workdir, env=env.name)

    def backend(self, name: str) -> dict[str, Any]:
        """The S3 backend block of one environment: its own key, always."""
        return backend_block(self.settings.state, name)

    def _workdir(self, name: str) -> Path:
        """An environment's directory, for names that keep it inside the workdir only."""
        return env_dir(self.settings.workdir, name)

    def prepare(self, env: Environment, fresh: bool = False) -> Synthesized:
        """Synthesize `env` into its working directory and run terraform init there."""
        workdir = self._workdir(env.name)
        if fresh and workdir.exists():
            shutil.rmtree(workdir)
        synthesized = self.synth.synth(env, self.backend(env.name), workdir)
        self.terraform.init(workdir, env=env.name)
        return synthesized

    def apply(self, env: Environment, revision: Revision, wanted_digest: str = "") -> str:
        """Synth -> init -> plan -> apply that plan if it has changes; record the result."""
        wanted_digest = wanted_digest or digest(env, self.stack_version)
        before = self.store.load(env.name)
        run_id = self.store.start_run(env.name, "apply", revision.sha)
        bound = log.bind(env=env.name, revision=revision.short, run_id=run_id)
        self.store.update(
            env.name,
            phase=Phase.APPLYING,
            kind=env.kind,
            revision=revision.sha,
            spec=env.spec(),
            attempted_digest=wanted_digest,
            reason="",
            message="applying",
            # The file is back (or changed): a confirmation given for its destroy is void.
            destroy_confirmed=False,
        )
        bound.info("apply_started")
        workdir = self._workdir(env.name)
        try:
            # Nothing runs for an environment another repository owns, or while state is unsaved.
            self._preflight(env, run_id)
            self.prepare(env)
            # Before anything can exist, the inventory names it (it outlives the status database).
            self.inventory.write(env, revision, wanted_digest)

            def plan_and_apply() -> bool:
                changed = self.terraform.plan(workdir, env=env.name, run_id=run_id)
                if changed:
                    self.terraform.apply(workdir, env=env.name, run_id=run_id)
                return changed

            changed = self._releasing_dead_locks(env.name, plan_and_apply)
        except TerraformError as error:
            failure = self._keep_errored_state(env.name, error)
            return self._failed(env.name, run_id, "apply", failure, bound, before=before)
        except EnvctlError as error:
            return self._failed(env.name, run_id, "apply", error, bound, before=before)
        reason = Reason.APPLIED if changed else Reason.UP_TO_DATE
        # The working dir now matches the applied digest: drift checks may reuse it as is.
        (workdir / APPLIED_MARKER).write_text(wanted_digest)
        try:
            self.inventory.write(env, revision, wanted_digest, applied=wanted_digest)
            # What was applied is kept beside the state: the destroy runs with exactly this.
            self.state.put(self.settings.state.config_key(env.name), (workdir / "main.tf.json").read_bytes())
        except TransientError as error:
            # The entry written before the apply still names the environment; it is re-applied if adopted.
            bound.warning("inventory_write_failed", error=str(error))
        record = self.store.update(
            env.name,
            phase=Phase.READY,
            reason=reason,
            message=f"applied at {revision.short}",
            applied_digest=wanted_digest,
            applied_kind=env.kind,
            applied_revision=revision.sha,
            failures=0,
            next_attempt_at=0.0,
            **_drift_cleared("InSync" if before and before.drift_status else ""),
        )
        self.store.finish_run(run_id, "succeeded", reason)
        bound.info("apply_succeeded", changed=changed)
        for event in transitions(before, record, "apply"):
            failures = before.failures if before else 0
            self.alert(event, record, f"applied at {revision.short} after {failures} failures")
        if before is not None and before.drift_status == "Drifted":
            self.alert(Event.DRIFT_RESOLVED, record, "drift resolved by an apply")
        return "applied"

    def destroy(self, env: Environment, revision: Revision, reason: str) -> str:
        """terraform destroy, then delete the state object and lock entry; record the result."""
        run_id = self.store.start_run(env.name, "destroy", revision.sha)
        bound = log.bind(env=env.name, revision=revision.short, run_id=run_id)
        record_before = self.store.load(env.name)
        self.store.update(
            env.name, phase=Phase.DESTROYING, reason=reason, message="destroying", revision=revision.sha
        )
        bound.info("destroy_started", reason=reason)
        try:
            self._preflight(env, run_id)
            if self.state.exists(env.name):
                self._prepare_destroy(env, bound)
                self._releasing_dead_locks(
                    env.name,
                    lambda: self.terraform.destroy(self._workdir(env.name), env=env.name, run_id=run_id),
                )
            elif record_before is not None and record_before.applied_digest:
                # Applied, yet no state: the bucket or prefix changed, or someone deleted it. A
                # "successful" destroy now would leave every resource running, unseen.
                key = self.settings.state.key(env.name)
                raise StalledError(
                    Reason.STATE_MISSING,
                    f"state object missing: s3://{self.settings.state.bucket}/{key} does not exist, "
                    "yet this environment was applied; was state.bucket or key_prefix changed? Restore "
                    f"the state object, then `envctl destroy {env.name} --confirm`",
                )
            else:
                # Terraform never got to create anything (e.g. the stack never synthesized), so
                # there is nothing to destroy and no stack needs to be built for it.
                bound.info("destroy_nothing_to_destroy", key=self.settings.state.key(env.name))
            self.state.delete(env.name)
        except TerraformError as error:
            failure = self._keep_errored_state(env.name, error)
            return self._failed(env.name, run_id, "destroy", failure, bound, before=record_before)
        except EnvctlError as error:
            return self._failed(env.name, run_id, "destroy", error, bound, before=record_before)
        shutil.rmtree(self._workdir(env.name), ignore_errors=True)
        record = self.store.update(
            env.name,
            phase=Phase.DESTROYED,
            reason=Reason.EXPIRED if reason == Reason.EXPIRED else Reason.DESTROYED,
            message=f"destroyed ({reason})",
            applied_digest="",
            attempted_digest="",
            failures=0,
            next_attempt_at=0.0,
            destroy_confirmed=False,
            **_drift_cleared(""),
        )
        self.store.finish_run(run_id, "succeeded", reason)
        bound.info("destroy_succeeded")
        if reason == Reason.EXPIRED:
            self.alert(Event.EXPIRED, record, "preview destroyed: its TTL ran out")
        return "destroyed"

    def _failed(
        self,
        name: str,
        run_id: int,
        action: str,
        error: EnvctlError,
        bound: Any,
        *,
        before: Record | None,
    ) -> str:
        """Record a failure with its reason and the next attempt's time; alert on a new episode only.

        `before` is the record as it was before this work began.
        """
        record = self.store.load(name)
        failures = (record.failures if record else 0) + 1
        now = self.clock()
        phase = Phase.FAILED
        if isinstance(error, Interrupted):
            reason, next_at = Reason.INTERRUPTED, 0.0
        elif isinstance(error, StalledError | PermanentError):
            # Retrying cannot help: a person acts (a new commit, a confirmation, a restored object).
            phase, next_at = Phase.STALLED, 0.0
            reason = Reason(error.reason) if isinstance(error, StalledError) else Reason.STACK_REJECTED
            if reason is Reason.STATE_NOT_PERSISTED:
                # The saved state is pushed as soon as the store answers again: retried with backoff.
                next_at = now + self.backoff(failures)
        else:
            reason = (
                Reason.LOCKED
                if isinstance(error, StateLocked)
                else (Reason.APPLY_FAILED if action == "apply" else Reason.DESTROY_FAILED)
            )
            next_at = now + self.backoff(failures)
        updated = self.store.update(
            name,
            phase=phase,
            reason=reason,
            message=str(error),
            failures=failures,
            next_attempt_at=next_at,
            stalled_action=action if phase is Phase.STALLED else "",
        )
        self.store.finish_run(run_id, "interrupted" if reason is Reason.INTERRUPTED else "failed", str(error))
        # Alert on the transition into this failure, not on every retry.
        for event in transitions(before, updated, action):
            self.alert(event, updated, str(error))
        bound.error(
            f"{action}_failed",
            reason=reason,
            error=str(error),
            failures=failures,
            retry_in=round(max(next_at - now, 0), 1),
            terraform=isinstance(error, TerraformError),
        )
        return "failed"

    def alert(self, event: Event, record: Record, message: str, **details: Any) -> None:
        self.alerts.emit(Alert(event, record.name, record.kind, message, details, at=self.clock()))

    # --- expiry ---------------------------------------------------------------------------------

    # --- drift ----------------------------------------------------------------------------------

    def queue_drift_check(self, name: str) -> None:
        """A drift check of `name` in its turn (after any running or waiting apply or destroy)."""
        self.queue.put(name, Work(), merge=_keep_terraform_work)

    def check_drift(self, name: str) -> str:
        """Plan with refresh; record in sync, drifted (with a report) or failed; repair if asked.

        Returns `in_sync`, `drifted`, `repaired`, `failed` or `skipped` (busy or not Ready).
        """
        lock = self._busy[name]
        # Never while the environment is applying or destroying, never twice at once.
        if not lock.acquire(blocking=False):
            return "skipped"
        try:
            record = self.store.load(name)
            if record is None or record.phase is not Phase.READY or not record.spec:
                return "skipped"
            # Drift checks share the `concurrency` slots with applies and destroys.
            with self._slots:
                if not self.may_act():
                    return "skipped"
                return self._check_drift(record)
        finally:
            lock.release()

    def _check_drift(self, record: Record) -> str:
        env = Environment.from_spec(record.spec or {})
        now = self.clock()
        run_id = self.store.start_run(env.name, "drift_check", record.applied_revision)
        bound = log.bind(env=env.name, revision=record.applied_revision[:12], run_id=run_id)
        workdir = self._workdir(env.name)
        try:
            # Reuse the working dir when it holds exactly what was applied; otherwise rebuild it.
            marker = workdir / APPLIED_MARKER
            if not marker.exists() or marker.read_text() != record.applied_digest:
                self.prepare(env, fresh=True)
                marker.write_text(record.applied_digest)
            drifted = self.terraform.plan(workdir, env=env.name, run_id=run_id)
            entries = drift.report(self.terraform.show(workdir, env=env.name)) if drifted else []
        except EnvctlError as error:
            # A failed check is not drift: recorded, retried on schedule, nothing repaired.
            self.store.update(
                env.name,
                drift_status="CheckFailed",
                drift_checked_at=now,
                drift_failures=record.drift_failures + 1,
                message=f"drift check failed: {error}",
            )
            self.store.finish_run(run_id, "failed", str(error))
            bound.error("drift_check_failed", error=str(error))
            return "failed"
        if not drifted:
            return self._in_sync(record, run_id, now, bound)
        return self._drifted(env, record, entries=entries, run_id=run_id, now=now, bound=bound)

    def _in_sync(self, record: Record, run_id: int, now: float, bound: Any) -> str:
        was_drifted = record.drift_status == "Drifted"
        updated = self.store.update(
            record.name,
            **_drift_cleared("InSync"),
            drift_checked_at=now,
            drift_failures=0,
            message=f"in sync at {record.applied_revision[:12]}",
        )
        self.store.finish_run(run_id, "in_sync")
        bound.info("drift_check_in_sync")
        if was_drifted:
            self.alert(Event.DRIFT_RESOLVED, updated, "drift resolved outside envctl")
        return "in_sync"

    def _drifted(
        self,
        env: Environment,
        record: Record,
        *,
        entries: list[dict[str, Any]],
        run_id: int,
        now: float,
        bound: Any,
    ) -> str:
        fingerprint = drift.fingerprint(entries)
        summary = drift.summary(entries)
        realert = self.settings.alerts.realert_hours * 3600
        if record.drift_status != "Drifted":
            event: Event | None = Event.DRIFT_DETECTED
        elif record.drift_fingerprint != fingerprint:
            event = Event.DRIFT_CHANGED
        elif now - record.drift_alerted_at >= realert:
            event = Event.DRIFT_PERSISTS
        else:
            event = None
        updated = self.store.update(
            env.name,
            drift_status="Drifted",
            drift_report=entries,
            drift_fingerprint=fingerprint,
            drift_first_seen=record.drift_first_seen if record.drift_status == "Drifted" else now,
            drift_checked_at=now,
            drift_failures=0,
            drift_alerted_at=now if event else record.drift_alerted_at,
            message=f"drifted: {summary}",
        )
        self.store.finish_run(run_id, "drifted", summary)
        bound.warning(
            "drift_detected", resources=[e["address"] for e in entries], remediation=env.remediation_mode
        )
        if event is not None:
            self.alert(event, updated, summary, report=entries, remediation=env.remediation_mode)
        if env.remediation_mode != "auto":
            return "drifted"
        return self._repair(env, updated, summary, bound)

    def _repair(self, env: Environment, record: Record, summary: str, bound: Any) -> str:
        """Apply exactly the plan that was inspected; a failure is a failed apply."""
        run_id = self.store.start_run(env.name, "repair", record.applied_revision)
        try:
            self.terraform.apply(self._workdir(env.name), env=env.name, run_id=run_id)
        except EnvctlError as error:
            return self._failed(env.name, run_id, "apply", error, bound, before=record)
        updated = self.store.update(
            env.name,
            **_drift_cleared("InSync"),
            reason=Reason.DRIFT_REPAIRED,
            message=f"drift repaired: {summary}",
        )
        self.store.finish_run(run_id, "succeeded", summary)
        bound.info("drift_repaired")
        self.alert(Event.DRIFT_RESOLVED, updated, f"drift repaired by applying the inspected plan: {summary}")
        return "repaired"

    def backoff(self, failures: int) -> float:
        """Jittered exponential backoff: base * 2^(n-1), capped, times 0.5..1."""
        retry = self.settings.retry
        delay = min(retry.base_seconds * 2 ** max(failures - 1, 0), retry.max_seconds)
        return float(delay * (0.5 + 0.5 * self.jitter()))

    def stop(self) -> int:
        """Take no more work, interrupt running Terraform gracefully; returns how many were running."""
        self.queue.close(timeout=0)
        interrupted = self.terraform.interrupt_all()
        # The interrupted runs are being recorded; give their workers a moment to finish that.
        self.queue.close(timeout=30)
        return interrupted
