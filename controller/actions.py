"""What the API and the CLI ask of a running controller: plan, drift, synth and confirm.

Plans for people are read-only (`-lock=false`, never applied) in a workspace
of their own, inside the work queue's slots, one plan of an environment at a
time; drift checks run in their environment's turn (`skipped` while it runs
anything else); confirmations go through the same write path as runs.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from controller import steps
from controller.backend import backend_block
from controller.errors import Busy, EnvctlError, NotFound
from controller.planner import Kind, awaits_confirmation
from controller.reconciler import Reconciler
from controller.runner import Runner
from controller.settings import Settings
from controller.source import Revision
from controller.statefiles import StateFiles
from controller.synth import SynthWorker
from controller.types import Environment, Phase, Record
from controller.workspace import Workspace

NOT_HELD = (
    "{name}: not waiting for a destroy (phase {phase}); `envctl destroy --confirm` only releases a "
    "destroy envctl holds. To destroy it, close its pull request (state: closed) or remove its file; "
    "a destroy held by the safety limits or for a persistent environment then waits for "
    "this confirmation. Git stays the source of truth."
)
PLANS_WAITING = 8
"""Plans asked through the API or the CLI that may wait for a Terraform slot at once."""


class NotHeld(EnvctlError):
    """A confirmation named an environment whose destroy envctl does not hold."""


def not_held(name: str, phase: str) -> str:
    return NOT_HELD.format(name=name, phase=phase)


class Actions:
    """The commands a client may ask of the controller beside its own work."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.parts = reconciler.parts
        self.store = reconciler.store
        self._plans_lock = threading.Lock()
        self._plans_waiting = 0
        self.plans_waiting_limit = PLANS_WAITING
        """Plans for people that may wait for a slot at once; more are refused (Busy, HTTP 429)."""
        self.planning: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        """One plan for people per environment at a time."""

    def known(self, name: str) -> Environment:
        """`name` as the last pass saw it in the repository (its recorded spec)."""
        record = self.store.load(name)
        if record is None or not record.spec:
            raise NotFound(f"{name}: no such environment in the status store")
        return Environment.from_spec(record.spec)

    # --- plans ----------------------------------------------------------------------------------

    def plan_report(self, name: str) -> dict[str, Any]:
        return self.plan(self.known(name))

    def plan(self, env: Environment) -> dict[str, Any]:
        """`terraform plan` of `env` now, as Terraform prints it, with a one-line summary.

        Beyond `plans_waiting_limit` plans waiting for a slot, Busy.
        """
        with self._plans_lock:
            if self._plans_waiting >= self.plans_waiting_limit:
                raise Busy(
                    f"{self._plans_waiting} plans are waiting for one of terraform.concurrency="
                    f"{self.parts.settings.terraform.concurrency} slots; ask again shortly",
                    retry_after=10,
                )
            self._plans_waiting += 1
        # One plan of an environment at a time (beside its apply, which it never waits for).
        with self.planning[env.name], ExitStack() as stack:
            try:
                stack.enter_context(self.reconciler.queue.slot())
            finally:
                with self._plans_lock:
                    self._plans_waiting -= 1
            return self._plan(env)

    def _plan(self, env: Environment) -> dict[str, Any]:
        workspace = Workspace.scratch(self.parts.settings.workdir / "plans", env.name)
        run = steps.Run(self.parts, env, Revision("", 0.0), "plan", 0, None)
        run.workspace = workspace
        try:
            steps.synth(run)
            steps.init(run)
            changed = self.parts.runner.plan(workspace, lock=False, env=env.name)
            text = self.parts.runner.show_text(workspace, env=env.name)
        finally:
            workspace.clear()
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

    # --- synth and drift ------------------------------------------------------------------------

    def synth_document(self, name: str) -> dict[str, Any]:
        """The synthesized Terraform JSON of `name` (into a directory of its own)."""
        env = self.known(name)
        out = Workspace.of(self.parts.settings.workdir / "synth", name)
        synthesized = self.parts.synth.synth(env, self.parts.backend(name), out.path)
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
            outcome = self.reconciler.check_drift(each, repair=repair)
            record = self.store.load(each)
            results[each] = {"outcome": outcome, "report": record.drift_report if record else []}
        return {"checked": results}

    # --- confirmations --------------------------------------------------------------------------

    def confirm(self, names: list[str]) -> list[str]:
        """Record confirmations of held destroys (every name checked first); returns the names
        that do not wait for one."""
        records = {name: self.store.load(name) for name in names}
        not_held = [n for n, r in records.items() if r is None or not awaits_confirmation(r)]
        if not_held:
            return not_held
        for name in names:
            self.reconciler.worker.record(name, {"destroy_confirmed": True}, "confirm")
        return []

    def release(self, names: list[str]) -> dict[str, tuple[str, str]]:
        """Confirm and run each held destroy of `names` now (no daemon owns the workdir).

        Every name is checked before anything is confirmed: a typo confirms nothing. Returns, per
        name, its outcome and a line saying it.
        """
        reconciler = self.reconciler
        revision = reconciler.source.fetch()
        # Decide as a pass would (after adopting what only the inventory knows, for a lost workdir).
        actions, _ = reconciler.decide(revision)
        decided = {a.name: a for a in actions}
        for name in names:
            action = decided.get(name)
            record = self.store.load(name)
            if action is None or record is None:
                raise NotFound(
                    f"{name}: no such environment, in the repository, the status store or the inventory"
                )
            held = action.phase is Phase.DESTROY_HELD or (
                action.kind in (Kind.NOTHING, Kind.WAIT) and awaits_confirmation(record)
            )
            if action.kind is not Kind.DESTROY and not held:
                raise NotHeld(not_held(name, record.phase.value))
        for name in names:
            reconciler.worker.record(name, {"destroy_confirmed": True}, "confirm")
        actions, _ = reconciler.decide(revision)
        decided = {a.name: a for a in actions}
        released = {}
        for name in names:
            action = decided[name]
            if action.kind is Kind.APPLY and action.environment is not None:
                # A held kind change of a persistent environment, released: applied as its file says.
                outcome = reconciler.execute(action, revision)
                released[name] = (outcome, f"{name}: {outcome} (kind change confirmed)")
            elif action.kind is not Kind.DESTROY:
                # Stalled on something other than a destroy (an apply): confirming changes nothing.
                reconciler.worker.record(name, {"destroy_confirmed": False}, "confirm")
                released[name] = ("not held", not_held(name, action.phase or "unchanged"))
            else:
                outcome = reconciler.execute(action, revision)
                released[name] = (outcome, f"{name}: {outcome}")
        return released


def unlock(
    settings: Settings, name: str, lock_id: str, *, state: StateFiles, runner: Runner, record: Record | None
) -> None:
    """`terraform force-unlock` in the environment's configuration, after an operator's check.

    Works beside a running daemon: it runs in a directory of its own, with the configuration of
    the last successful apply (or a synth of the last valid spec when there is none).
    """
    saved = state.get(settings.state.config_key(name))
    with tempfile.TemporaryDirectory(prefix=f"envctl-unlock-{name}-") as tmp:
        workspace = Workspace(Path(tmp))
        if saved is not None:
            workspace.write_config(saved)
        else:
            spec = _last_spec(settings, state, name, record)
            synth = SynthWorker(settings.stack, settings.synth)
            try:
                synth.synth(Environment.from_spec(spec), backend_block(settings.state, name), workspace.path)
            finally:
                synth.close()
        runner.init(workspace, env=name)
        runner.force_unlock(workspace, lock_id, env=name)


def _last_spec(settings: Settings, state: StateFiles, name: str, record: Record | None) -> dict[str, Any]:
    """The last valid spec of `name`: from its status record, else its inventory entry."""
    if record is not None and record.spec:
        return record.spec
    entry = state.get(settings.state.inventory_key(name))
    spec = json.loads(entry).get("spec") if entry else None
    if not isinstance(spec, dict):
        raise NotFound(f"{name}: no saved configuration, status record or inventory entry to unlock with")
    return spec
