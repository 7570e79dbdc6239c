"""The pass and the dispatch: fetch -> desired -> adopt -> decide -> record or queue.

A pass only decides; applies, destroys and drift checks run on the work queue's
workers through the executor (one environment's run) and the drift checker. A
source failure ends the pass before any decision, so nothing is ever destroyed
because git was unreachable.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from controller import metrics
from controller.alerts import Alert, Alerts, Event
from controller.backend import env_dir
from controller.drift_check import DriftChecker
from controller.environments import load_all, within_policy
from controller.errors import (
    NotFound,
    PermanentError,
    SourceError,
)
from controller.executor import Executor
from controller.expiry import expires_at, warn_expiring
from controller.feedback import Feedback
from controller.inventory import Inventory
from controller.planner import Action, Kind, decide
from controller.settings import Settings, defaults_for, parse_duration
from controller.source import GitSource, Revision
from controller.statefiles import StateFiles
from controller.store import StatusStore
from controller.synth import Synthesized, SynthWorker, stack_version
from controller.terraform import TerraformRunner
from controller.types import Environment, Invalid, Phase, Reason, Record
from controller.workqueue import WorkQueue

log = structlog.get_logger("envctl.reconciler")
BATCH_HOLDS = (Reason.SAFETY_LIMIT, Reason.EMPTY_LISTING)
"""Holds decided for a whole batch of removals: alerted once for the batch."""
MIN_TERRAFORM = (1, 6, 0)
"""The oldest Terraform envctl runs: the S3 backend's `endpoints` block and `use_path_style` are 1.6+."""


@dataclass(frozen=True)
class Work:
    """A queued item: an apply or destroy decided at `revision`, or (no action) a drift check."""

    action: Action | None = None
    revision: Revision | None = None


def policed(
    desired: dict[str, Environment | Invalid], settings: Settings
) -> dict[str, Environment | Invalid]:
    """`desired` with what the settings forbid an environment file made Invalid (see within_policy)."""
    return within_policy(
        desired,
        locked=settings.locked_parameters,
        max_ttl_seconds=parse_duration(settings.previews.max_ttl),
        min_drift_minutes=settings.drift.min_interval_minutes,
        settings_file=settings.source_file,
    )


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
        self.terraform = terraform
        self.store = store
        self.state = state
        self.alerts = alerts or Alerts.from_settings(settings.alerts)
        self.clock = clock
        self.jitter = jitter
        self.stack_version = stack_version(settings.stack)
        self.inventory = Inventory(settings, state, store, clock)
        self.executor = Executor(
            settings,
            synth=synth,
            terraform=terraform,
            store=store,
            state=state,
            inventory=self.inventory,
            alerts=self.alerts,
            clock=clock,
            jitter=jitter,
            stack_version=self.stack_version,
            feedback=Feedback.from_settings(settings, store),
        )
        self.feedback = self.executor.feedback
        self.drift = DriftChecker(self.executor)
        self.on_work_done: Callable[[], None] = lambda: None
        """Called after each queued item (the daemon reschedules drift checks and wake-ups)."""
        self._pass_lock = threading.Lock()
        self.queue: WorkQueue[Work] = WorkQueue(settings.terraform.concurrency, self._work)
        """Applies, destroys and the daemon's drift checks, one item per environment."""

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
        decided = {kind.value: sum(a.kind is kind for a in actions) for kind in Kind}
        # An idle pass (nothing to apply, destroy or record) says nothing at info.
        idle = not (decided[Kind.APPLY.value] or decided[Kind.DESTROY.value] or decided[Kind.RECORD.value])
        (log.debug if idle else log.info)("pass_decided", revision=revision.short, **decided)

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
            max_destroys_per_hour=self.settings.safety.max_destroys_per_hour,
            # Run times are the store's wall clock.
            destroyed_last_hour=self.store.runs_started_since("destroy", time.time() - 3600),
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
        desired = policed(load_all(self.source.files(revision), self.settings.default_region), self.settings)
        return {
            name: replace(env, parameters={**defaults_for(self.settings, env.kind), **env.parameters})
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
        """One queued item; then the daemon reschedules timed work (`on_work_done`)."""
        try:
            return self._work_on(name, work)
        finally:
            self.on_work_done()

    def _work_on(self, name: str, work: Work) -> str:
        """One queued item, acting on the latest recorded state (level-based)."""
        if work.action is None:
            return self.drift.check_drift(name)
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
        # Decided before an earlier run of the same work failed: its backoff holds.
        if record is not None and record.phase is Phase.FAILED and self.clock() < record.next_attempt_at:
            same = (
                record.reason == Reason.DESTROY_FAILED
                if action.kind is Kind.DESTROY
                else record.attempted_digest == action.digest
            )
            if same:
                log.debug("work_backing_off", env=name, retry_at=record.next_attempt_at)
                return "waiting"
        return self.execute(action, work.revision or Revision("", 0.0))

    def queue_drift_check(self, name: str) -> None:
        """A drift check of `name` in its turn (after any running or waiting apply or destroy)."""
        self.queue.put(name, Work(), merge=_keep_terraform_work)

    # --- the steps, as the CLI and tests reach them -------------------------------------------

    @property
    def synth(self) -> SynthWorker:
        return self.executor.synth

    @synth.setter
    def synth(self, worker: SynthWorker) -> None:
        self.executor.synth = worker

    @property
    def may_act(self) -> Callable[[], bool]:
        return self.executor.may_act

    @may_act.setter
    def may_act(self, check: Callable[[], bool]) -> None:
        self.executor.may_act = check

    def execute(self, action: Action, revision: Revision) -> str:
        return self.executor.execute(action, revision)

    def prepare(self, env: Environment, fresh: bool = False) -> Synthesized:
        return self.executor.prepare(env, fresh)

    def backend(self, name: str) -> dict[str, Any]:
        return self.executor.backend(name)

    def known(self, name: str) -> Environment:
        """`name` as the last pass saw it in the repository (its recorded spec)."""
        record = self.store.load(name)
        if record is None or not record.spec:
            raise NotFound(f"{name}: no such environment in the status store")
        return Environment.from_spec(record.spec)

    def plan_report(self, name: str) -> dict[str, Any]:
        return self.executor.plan_report(self.known(name))

    def synth_document(self, name: str) -> dict[str, Any]:
        """The synthesized Terraform JSON of `name` (into a directory of its own)."""
        env = self.known(name)
        out = env_dir(self.settings.workdir / "synth", name)
        synthesized = self.synth.synth(env, self.backend(name), out)
        document: dict[str, Any] = json.loads(synthesized.file.read_text())
        return document

    def drift_report(self, name: str | None, repair: bool = False) -> dict[str, Any]:
        """Check `name` (or every Ready environment) now; each outcome with its report.

        A check asked for (the API, `envctl drift`) reports; it repairs only with `repair`
        (`envctl drift NAME --repair`), never by the environment's remediation alone.
        """
        records = self.store.load_all()
        ready = [n for n, r in records.items() if r.phase is Phase.READY]
        if name is not None and name not in ready:
            raise NotFound(f"{name}: not a Ready environment; drift is checked on applied environments")
        results = {}
        for each in [name] if name else ready:
            outcome = self.check_drift(each, repair=repair)
            record = self.store.load(each)
            results[each] = {"outcome": outcome, "report": record.drift_report if record else []}
        return {"checked": results}

    def check_drift(self, name: str, repair: bool | None = None) -> str:
        return self.drift.check_drift(name, repair)

    def backoff(self, failures: int) -> float:
        return self.executor.backoff(failures)

    def alert(self, event: Event, record: Record, message: str, **details: Any) -> None:
        self.executor.alert(event, record, message, **details)

    def stop(self) -> int:
        """Take no more work, interrupt running Terraform gracefully; returns how many were running."""
        self.queue.close(timeout=0)
        interrupted = self.terraform.interrupt_all()
        # The interrupted runs are being recorded; give their workers a moment to finish that.
        self.queue.close(timeout=30)
        return interrupted
