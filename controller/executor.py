"""Executing one environment: synth, init, plan, apply or destroy, and recording the outcome.

Every step fails the same way: the error becomes a recorded outcome on the
environment (phase, reason, message, backoff, alerts on transitions), never an
exception out of the worker. Before any run: ownership, no orphaned Terraform,
no unsaved state. Destroys run with the configuration of the last apply.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from controller.alerts import Alert, Alerts, Event
from controller.backend import backend_block, env_dir
from controller.errors import (
    Busy,
    EnvctlError,
    Interrupted,
    PermanentError,
    QuotaExceeded,
    StalledError,
    StateLocked,
    SynthError,
    TerraformError,
    TransientError,
)
from controller.feedback import Feedback
from controller.hooks import Hooks, StackHooks
from controller.inventory import Inventory
from controller.planner import Action, Kind, digest
from controller.settings import Settings
from controller.source import Revision
from controller.statefiles import StateFiles
from controller.status import transitions
from controller.store import Run, StatusStore
from controller.synth import Synthesized, SynthWorker, check_backend
from controller.terraform import PLAN_FILE, TerraformRunner, lock_created, terraform_running_in
from controller.types import Environment, Phase, Reason, Record

log = structlog.get_logger("envctl.executor")
APPLIED_MARKER = ".envctl-applied"
"""Written in an environment's directory after an apply: drift checks may reuse it as is."""
ERRORED_STATE = "errored.tfstate"
"""What Terraform writes when it cannot upload the state it has."""
PLANS_WAITING = 8
"""Plans asked through the API or the CLI that may wait for a Terraform slot at once."""
T = TypeVar("T")


def drift_cleared(status: str) -> dict[str, Any]:
    """Record fields of an environment with no drift (after a clean check, a repair, an apply)."""
    return {"drift_status": status, "drift_report": [], "drift_fingerprint": "", "drift_first_seen": 0.0}


class Executor:
    """Applies and destroys one environment at a time, at most `concurrency` at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        synth: SynthWorker,
        terraform: TerraformRunner,
        store: StatusStore,
        state: StateFiles,
        inventory: Inventory,
        alerts: Alerts,
        clock: Callable[[], float],
        jitter: Callable[[], float],
        stack_version: str,
        hooks: StackHooks | None = None,
        feedback: Feedback | None = None,
    ) -> None:
        self.settings = settings
        self.feedback = feedback or Feedback(settings, store, [])
        """Where a preview's state is shown on its pull request (queued, never waited for)."""
        self.hooks = hooks or StackHooks(
            endpoint=settings.hooks.endpoint,
            quota_check=settings.hooks.quota_check,
            cleanup_timeout_seconds=settings.hooks.cleanup_timeout_seconds,
        )
        self.synth = synth
        self.terraform = terraform
        self.store = store
        self.state = state
        self.inventory = inventory
        self.alerts = alerts
        self.clock = clock
        self.jitter = jitter
        self.stack_version = stack_version
        self.busy: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        """One run per environment at a time: applies, destroys and drift checks."""
        self.slots = threading.BoundedSemaphore(settings.terraform.concurrency)
        """At most `concurrency` environments run Terraform at once, drift checks included."""
        self._plans_lock = threading.Lock()
        self.planning: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        """One plan for people per environment at a time (plans never take `busy`)."""
        self._plans_waiting = 0
        self.plans_waiting_limit = PLANS_WAITING
        """Plans for people that may wait for a slot at once; more are refused (Busy, HTTP 429)."""
        self.may_act: Callable[[], bool] = lambda: True
        """Whether this process may start Terraform now (the daemon: while it holds the lease)."""

    def execute(self, action: Action, revision: Revision) -> str:
        """Apply or destroy one environment; the outcome is recorded, never raised."""
        try:
            return self._execute(action, revision)
        except Exception as error:  # a bug, OSError, sqlite: recorded on this environment, never raised
            log.exception("work_crashed", env=action.name, action=str(action.kind))
            return self._crashed(action, error)

    # --- expiry ---------------------------------------------------------------------------------

    # --- drift ----------------------------------------------------------------------------------

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
        if action.kind is Kind.APPLY:
            self.feedback.notify(updated, "failure", updated.message)
        return "failed"

    def _execute(self, action: Action, revision: Revision) -> str:
        # Waits for a drift check of the same environment to end: never two runs at once.
        lock = self.busy[action.name]
        lock.acquire()
        try:
            assert action.environment is not None
            with self.slots:
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
        workdir = self.workdir(name)
        if workdir.exists() and terraform_running_in(workdir):
            raise TransientError(
                f"a Terraform process started by an earlier envctl still runs in {workdir}; "
                "waiting for it to finish (it releases its lock when it does)"
            )
        self._push_saved_state(env, run_id)

    def keep_errored_state(self, name: str, error: TerraformError) -> EnvctlError:
        """After a failed run: a state Terraform could not upload is kept, and the error says so."""
        errored = self.workdir(name) / ERRORED_STATE
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
        workdir = self.workdir(name)
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
            self.terraform.force_unlock(self.workdir(name), locked.lock_id, env=name)
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
        if terraform_running_in(self.workdir(name)):
            return None
        for run in self.store.runs(name, limit=50):
            if run.finished_at is not None and run.started_at - 1.0 <= created <= run.finished_at + 1.0:
                return run
        return None

    def _prepare_destroy(self, env: Environment, bound: Any) -> None:
        """The configuration of the last successful apply, else a fresh synth, initialized."""
        workdir = self.workdir(env.name)
        if workdir.exists():
            shutil.rmtree(workdir)
        key = self.settings.state.config_key(env.name)
        saved = self.state.get(key)
        if saved is None:
            bound.info("destroy_synthesizes", reason="no saved configuration")
            self.prepare(env)
            return
        # Only the configuration envctl saved runs: anyone who can write the bucket could
        # otherwise make a destroy run a provisioner of theirs, or point it at another state.
        # Known digests: the one the last applying replica wrote into the inventory entry (this
        # store's may be older, after another replica led) and this store's own (the entry's
        # write may have failed after the configuration was saved).
        record = self.store.load(env.name)
        where = f"s3://{self.settings.state.bucket}/{key}"
        found = hashlib.sha256(saved).hexdigest()
        known = {
            d for d in (self._saved_config_digest(env.name), record.config_digest if record else "") if d
        }
        expected = " or ".join(sorted(d[:12] for d in known))
        if known and found not in known:
            raise StalledError(
                Reason.CONFIG_CHANGED,
                f"{where} is not the configuration envctl saved at {env.name}'s last apply (sha256 "
                f"{found[:12]}, saved {expected}); nothing was run. Restore it, or "
                f"delete it to destroy with a fresh synth, then `envctl destroy {env.name} --confirm`",
            )
        try:
            check_backend(json.loads(saved), self.backend(env.name), where)
        except (ValueError, SynthError) as error:
            raise StalledError(Reason.CONFIG_CHANGED, f"{error}; nothing was run") from None
        workdir.mkdir(parents=True)
        (workdir / "main.tf.json").write_bytes(saved)
        self.terraform.init(workdir, env=env.name)

    def _saved_config_digest(self, name: str) -> str:
        """The config_digest of `name`'s inventory entry ("" when it has none or is unreadable)."""
        try:
            entry = self.state.read_inventory(name)
        except TransientError:
            return ""
        return str(entry.get("config_digest") or "") if isinstance(entry, dict) else ""

    def backend(self, name: str) -> dict[str, Any]:
        """The S3 backend block of one environment: its own key, always."""
        return backend_block(self.settings.state, name)

    def workdir(self, name: str) -> Path:
        """An environment's directory, for names that keep it inside the workdir only."""
        return env_dir(self.settings.workdir, name)

    def prepare(self, env: Environment, fresh: bool = False, creating: bool = False) -> Synthesized:
        """Synthesize `env` into its working directory and run terraform init there.

        `creating`: the environment has never been applied; the stack's creation hooks (quota
        check, adoption of leftovers) run between synth and init, so no Terraform runs for an
        environment that cannot be created.
        """
        workdir = self.workdir(env.name)
        if fresh and workdir.exists():
            shutil.rmtree(workdir)
        synthesized = self.synth.synth(env, self.backend(env.name), workdir)
        if creating:
            self._before_create(env, synthesized)
        self.terraform.init(workdir, env=env.name)
        return synthesized

    def _before_create(self, env: Environment, synthesized: Synthesized) -> None:
        document = json.loads(synthesized.file.read_text())
        hooks = Hooks.of(document)
        if hooks is None:
            return
        self.hooks.check_quotas(hooks, env.name)
        imported = self.hooks.adopt(document, hooks)
        if imported:
            log.info("adopting_existing", env=env.name, log_groups=imported)
            synthesized.file.write_text(json.dumps(document, indent=2, sort_keys=True))

    def _stack_hooks(self, env: Environment) -> Hooks | None:
        """The hooks of the configuration a destroy runs with."""
        file = self.workdir(env.name) / "main.tf.json"
        return Hooks.of(json.loads(file.read_text())) if file.exists() else None

    def apply(self, env: Environment, revision: Revision, wanted_digest: str = "") -> str:
        """Synth -> init -> plan -> apply that plan if it has changes; record the result."""
        wanted_digest = wanted_digest or digest(env, self.stack_version)
        before = self.store.load(env.name)
        run_id = self.store.start_run(env.name, "apply", revision.sha)
        bound = log.bind(env=env.name, revision=revision.short, run_id=run_id)
        applying = self.store.update(
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
        self.feedback.notify(applying, "in_progress", "applying")
        bound.info("apply_started")
        workdir = self.workdir(env.name)
        try:
            # Nothing runs for an environment another repository owns, or while state is unsaved.
            self._preflight(env, run_id)
            self.prepare(env, creating=before is None or not before.applied_digest)
            # Before anything can exist, the inventory names it (it outlives the status database).
            self.inventory.write(env, revision, wanted_digest)

            def plan_and_apply() -> bool:
                changed = self.terraform.plan(workdir, env=env.name, run_id=run_id)
                if changed:
                    self.terraform.apply(workdir, env=env.name, run_id=run_id)
                return changed

            changed = self._releasing_dead_locks(env.name, plan_and_apply)
        except TerraformError as error:
            failure = self.keep_errored_state(env.name, error)
            return self.failed(env.name, run_id, "apply", failure, bound, before=before)
        except EnvctlError as error:
            return self.failed(env.name, run_id, "apply", error, bound, before=before)
        reason = Reason.APPLIED if changed else Reason.UP_TO_DATE
        # The working dir now matches the applied digest: drift checks may reuse it as is.
        (workdir / APPLIED_MARKER).write_text(wanted_digest)
        config = (workdir / "main.tf.json").read_bytes()
        config_digest = hashlib.sha256(config).hexdigest()
        (workdir / PLAN_FILE).unlink(missing_ok=True)  # it may hold sensitive values
        try:
            # What was applied is kept beside the state: the destroy runs with exactly this. Saved
            # before the entry naming its digest, so a failure between the two leaves an entry
            # that still matches the configuration in the bucket.
            self.state.put(self.settings.state.config_key(env.name), config)
            self.inventory.write(
                env, revision, wanted_digest, applied=wanted_digest, config_digest=config_digest
            )
        except TransientError as error:
            # The entry written before the apply still names the environment; it is re-applied if adopted.
            bound.warning("inventory_write_failed", error=str(error))
        record = self.store.update(
            env.name,
            phase=Phase.READY,
            reason=reason,
            outputs=self._outputs(env.name, bound),
            message=f"applied at {revision.short}",
            applied_digest=wanted_digest,
            applied_kind=env.kind,
            applied_revision=revision.sha,
            config_digest=config_digest,
            failures=0,
            next_attempt_at=0.0,
            **drift_cleared("InSync" if before and before.drift_status else ""),
        )
        self.store.finish_run(run_id, "succeeded", reason)
        self.feedback.notify(record, "success", f"ready: applied at {revision.short}")
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
            hooks = None
            if self.state.exists(env.name):
                self._prepare_destroy(env, bound)
                hooks = self._stack_hooks(env)
                if hooks is not None:
                    # Run-time leftovers (load balancers) would block the subnets and the VPC.
                    self.hooks.before_destroy(hooks)
                self._releasing_dead_locks(
                    env.name,
                    lambda: self.terraform.destroy(self.workdir(env.name), env=env.name, run_id=run_id),
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
            if hooks is not None:
                try:
                    self.hooks.after_destroy(hooks)
                except TransientError as error:
                    # Destroyed all the same; a leftover log group is adopted on the next creation.
                    bound.warning("after_destroy_failed", error=str(error))
        except TerraformError as error:
            failure = self.keep_errored_state(env.name, error)
            return self.failed(env.name, run_id, "destroy", failure, bound, before=record_before)
        except EnvctlError as error:
            return self.failed(env.name, run_id, "destroy", error, bound, before=record_before)
        shutil.rmtree(self.workdir(env.name), ignore_errors=True)
        record = self.store.update(
            env.name,
            phase=Phase.DESTROYED,
            reason=Reason.EXPIRED if reason == Reason.EXPIRED else Reason.DESTROYED,
            message=f"destroyed ({reason})",
            # The spec it was destroyed for (a closed preview says `closed`; a removed file, its last).
            spec=env.spec(),
            applied_digest="",
            attempted_digest="",
            config_digest="",
            failures=0,
            next_attempt_at=0.0,
            destroy_confirmed=False,
            **drift_cleared(""),
        )
        self.store.finish_run(run_id, "succeeded", reason)
        self.feedback.notify(record, "inactive", f"destroyed ({reason})")
        bound.info("destroy_succeeded")
        if reason == Reason.EXPIRED:
            self.alert(Event.EXPIRED, record, "preview destroyed: its TTL ran out")
        return "destroyed"

    def failed(
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
                else Reason.QUOTA_EXCEEDED
                if isinstance(error, QuotaExceeded)
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
        if action == "apply" and reason is not Reason.INTERRUPTED:
            self.feedback.notify(
                updated, "error" if phase is Phase.STALLED else "failure", f"{reason}: {error}"
            )
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

    def plan_report(self, env: Environment) -> dict[str, Any]:
        """`terraform plan` of `env` now, as Terraform prints it, with a one-line summary.

        For people, never applied: read-only (`-lock=false`, so it never waits for a running
        apply's lock), in a directory of its own removed afterwards, inside the same
        `concurrency` slots as every other Terraform, one plan of an environment at a time;
        beyond `PLANS_WAITING` waiting plans, Busy.
        """
        with self._plans_lock:
            if self._plans_waiting >= self.plans_waiting_limit:
                raise Busy(
                    f"{self._plans_waiting} plans are waiting for one of terraform.concurrency="
                    f"{self.settings.terraform.concurrency} slots; ask again shortly",
                    retry_after=10,
                )
            self._plans_waiting += 1
        # One plan of an environment at a time (beside its apply, which it never waits for).
        with self.planning[env.name]:
            try:
                self.slots.acquire()
            finally:
                with self._plans_lock:
                    self._plans_waiting -= 1
            try:
                return self._plan_report(env)
            finally:
                self.slots.release()

    def _plan_report(self, env: Environment) -> dict[str, Any]:
        parent = self.settings.workdir / "plans"
        parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"{env.name}-", dir=parent))
        try:
            self.synth.synth(env, self.backend(env.name), workdir)
            self.terraform.init(workdir, env=env.name)
            changed = self.terraform.plan(workdir, env=env.name, lock=False)
            text = self.terraform.show_text(workdir, env=env.name)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        lines = (line.strip() for line in text.splitlines())
        summary = next((line for line in lines if line.startswith(("Plan:", "No changes."))), "")
        return {
            "name": env.name,
            "changed": changed,
            "summary": summary or ("changes pending" if changed else "No changes."),
            "text": text,
            "note": self._running_note(env.name),
        }

    def _running_note(self, name: str) -> str:
        """What a plan made beside a running apply or destroy of the same environment means."""
        run = next((r for r in self.store.unfinished_runs() if r.name == name), None)
        if run is None:
            return ""
        ago = max(int(time.time() - run.started_at), 0)
        doing = {"apply": "applying", "destroy": "destroying"}.get(run.action, f"running {run.action}")
        return (
            f"{name} is {doing} (run {run.id}, started {ago} s ago); this plan was made "
            "without the state lock against the state before that run ends, and may be out of date"
        )

    def _outputs(self, name: str, bound: Any) -> dict[str, Any]:
        """The stack's outputs, read from the state just written; sensitive values are not kept."""
        try:
            raw = self.state.get(self.settings.state.key(name))
            outputs = json.loads(raw).get("outputs", {}) if raw else {}
        except (TransientError, ValueError) as error:
            bound.warning("outputs_unreadable", error=str(error))
            return {}
        return {
            key: "(sensitive)" if value.get("sensitive") else value.get("value")
            for key, value in sorted(outputs.items())
            if isinstance(value, dict)
        }

    def alert(self, event: Event, record: Record, message: str, **details: Any) -> None:
        self.alerts.emit(Alert(event, record.name, record.kind, message, details, at=self.clock()))

    def backoff(self, failures: int) -> float:
        """Jittered exponential backoff: base * 2^(n-1), capped, times 0.5..1."""
        retry = self.settings.retry
        delay = min(retry.base_seconds * 2 ** max(failures - 1, 0), retry.max_seconds)
        return float(delay * (0.5 + 0.5 * self.jitter()))
