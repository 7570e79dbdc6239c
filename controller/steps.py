"""The named steps runs are made of: each succeeds or raises a classified error (controller.errors).

A step reads and writes the world (the state bucket, the stack hooks, Terraform
through the runner, the workspace) and never the status record: a run returns
its outcome and the queue worker writes it once. `Run` carries what one run of
one environment needs.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from controller.backend import backend_block
from controller.errors import (
    EnvctlError,
    StalledError,
    StateLocked,
    SynthError,
    TerraformError,
    TransientError,
)
from controller.hooks import Hooks, StackHooks
from controller.inventory import Inventory
from controller.runner import Runner
from controller.settings import Settings
from controller.source import Revision
from controller.statefiles import StateFiles
from controller.store import StatusStore
from controller.synth import Synthesized, SynthWorker, check_backend
from controller.types import Environment, Reason, Record
from controller.workspace import Workspace

log = structlog.get_logger("envctl.steps")
T = TypeVar("T")


@dataclass
class Parts:
    """What runs work with, built once by controller.wiring."""

    settings: Settings
    synth: SynthWorker
    runner: Runner
    store: StatusStore
    """Read only here: the run history tells a lock envctl's own dead run left."""
    state: StateFiles
    inventory: Inventory
    hooks: StackHooks
    stack_version: str

    def workspace(self, name: str) -> Workspace:
        return Workspace.of(self.settings.workdir, name)

    def backend(self, name: str) -> dict[str, Any]:
        """The S3 backend block of one environment: its own key, always."""
        return backend_block(self.settings.state, name)


@dataclass
class Run:
    """One run of one environment: what it works on, and what it found on the way."""

    parts: Parts
    env: Environment
    revision: Revision
    action: str
    id: int
    before: Record | None
    digest: str = ""
    log: Any = None
    released: list[tuple[str, str]] = field(default_factory=list)
    """(lock ID, message) of each lock of envctl's own dead runs released during this run."""

    def __post_init__(self) -> None:
        self.workspace = self.parts.workspace(self.env.name)
        if self.log is None:
            self.log = log.bind(env=self.env.name, revision=self.revision.short, run_id=self.id)

    @property
    def bind(self) -> dict[str, Any]:
        """What Terraform's log lines carry."""
        return {"env": self.env.name, "run_id": self.id}


# --- before anything runs -----------------------------------------------------------------------


def preflight(run: Run) -> None:
    """Nothing runs over another repository's environment, a live Terraform or an unsaved state."""
    conflict = run.parts.inventory.owner_conflict(run.env.name)
    if conflict is not None:
        raise StalledError(Reason.OWNED_ELSEWHERE, conflict)
    if run.parts.runner.busy(run.workspace):
        raise TransientError(
            f"a Terraform process started by an earlier envctl still runs in {run.workspace.path}; "
            "waiting for it to finish (it releases its lock when it does)"
        )
    push_saved_state(run)


def push_saved_state(run: Run) -> None:
    """Push a state a failed upload left behind, before anything else runs against the older one."""
    parts, name = run.parts, run.env.name
    key = parts.settings.state.errored_state_key(name)
    saved = run.workspace.errored_state() or parts.state.get(key)
    if saved is None:
        return
    # Into the existing directory: the unsaved state stays there until it is pushed.
    synth(run)
    init(run)
    releasing(run, lambda: parts.runner.state_push(run.workspace, saved, **run.bind))
    run.log.warning("errored_state_pushed", key=key)
    parts.state.remove(key)
    run.workspace.drop_errored_state()


def releasing(run: Run, step: Callable[[], T]) -> T:
    """Run Terraform steps; a lock one of envctl's own finished runs provably left is released once."""
    try:
        return step()
    except StateLocked as locked:
        left = _run_that_left(run, locked)
        if left is None:
            raise
        run.parts.runner.force_unlock(run.workspace, locked.lock_id, **run.bind)
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(left.started_at))
        run.released.append(
            (
                locked.lock_id,
                f"released the state lock {locked.lock_id} that envctl's own {left.action} run "
                f"{left.id} (started {started}) left behind when it stopped; its process is gone. "
                "Resuming",
            )
        )
        run.log.warning("stale_lock_released", lock_id=locked.lock_id, run=left.id)
        return step()


def _run_that_left(run: Run, locked: StateLocked) -> Any:
    """The finished run of this environment, by this envctl, during which the lock was taken."""
    created = run.parts.runner.left_by_us(locked)
    if created is None or run.parts.runner.busy(run.workspace):
        return None
    for earlier in run.parts.store.runs(run.env.name, limit=50):
        finished = earlier.finished_at
        if finished is not None and earlier.started_at - 1.0 <= created <= finished + 1.0:
            return earlier
    return None


# --- synth and init -------------------------------------------------------------------------------


def synth(run: Run, *, fresh: bool = False) -> Synthesized:
    """This environment's configuration at this revision, in its workspace."""
    if fresh:
        run.workspace.clear()
    return run.parts.synth.synth(run.env, run.parts.backend(run.env.name), run.workspace.path)


def before_create(run: Run, synthesized: Synthesized) -> None:
    """A first creation: quotas checked and leftovers adopted before Terraform runs at all."""
    document = json.loads(synthesized.file.read_text())
    hooks = Hooks.of(document)
    if hooks is None:
        return
    run.parts.hooks.check_quotas(hooks, run.env.name)
    imported = run.parts.hooks.adopt(document, hooks)
    if imported:
        run.log.info("adopting_existing", log_groups=imported)
        run.workspace.write_config(json.dumps(document, indent=2, sort_keys=True).encode())


def init(run: Run) -> None:
    run.parts.runner.init(run.workspace, **run.bind)


def name_in_inventory(run: Run) -> None:
    """Before anything can exist, the inventory names it (it outlives the status database)."""
    run.parts.inventory.write(run.env, run.revision, run.digest)


# --- plan and apply -------------------------------------------------------------------------------


def plan(run: Run) -> bool:
    """Plan with the state lock; True when the plan has changes."""
    return run.parts.runner.plan(run.workspace, **run.bind)


def apply_plan(run: Run) -> None:
    """Apply exactly the saved plan."""
    run.parts.runner.apply(run.workspace, **run.bind)


def persist(run: Run) -> str:
    """After an apply: the configuration and its digest travel with the state; returns the digest.

    Saved before the inventory entry naming its digest, so a failure between the two leaves an
    entry that still matches the configuration in the bucket.
    """
    run.workspace.mark_applied(run.digest)
    run.workspace.drop_plan()
    config = run.workspace.read_config() or b""
    config_digest = hashlib.sha256(config).hexdigest()
    try:
        run.parts.state.put(run.parts.settings.state.config_key(run.env.name), config)
        run.parts.inventory.write(
            run.env, run.revision, run.digest, applied=run.digest, config_digest=config_digest
        )
    except TransientError as error:
        # The entry written before the apply still names the environment; it is re-applied if adopted.
        run.log.warning("inventory_write_failed", error=str(error))
    return config_digest


def outputs(run: Run) -> dict[str, Any]:
    """The stack's outputs, read from the state just written; sensitive values are not kept."""
    try:
        raw = run.parts.state.get(run.parts.settings.state.key(run.env.name))
        found = json.loads(raw).get("outputs", {}) if raw else {}
    except (TransientError, ValueError) as error:
        run.log.warning("outputs_unreadable", error=str(error))
        return {}
    return {
        key: "(sensitive)" if value.get("sensitive") else value.get("value")
        for key, value in sorted(found.items())
        if isinstance(value, dict)
    }


def keep_errored_state(run: Run, error: TerraformError) -> EnvctlError:
    """After a failed run: a state Terraform could not upload is kept, and the error says so."""
    errored = run.workspace.errored_state()
    if errored is None:
        return error
    settings, name = run.parts.settings, run.env.name
    where = "in the workdir"
    try:
        run.parts.state.put(settings.state.errored_state_key(name), errored)
        where = f"at s3://{settings.state.bucket}/{settings.state.errored_state_key(name)}"
    except TransientError as problem:
        run.log.warning("errored_state_not_copied", error=str(problem))
    return StalledError(
        Reason.STATE_NOT_PERSISTED,
        f"state upload failed; the newer state is kept {where} and envctl will push it before any "
        f"other run of {name} (the next pass, a new commit or `envctl destroy {name} --confirm` "
        f"retries): {error}",
    )


# --- destroy --------------------------------------------------------------------------------------


def prepare_destroy(run: Run) -> Hooks | None:
    """The configuration of the last successful apply, else a fresh synth, initialized; its hooks."""
    parts, name = run.parts, run.env.name
    run.workspace.clear()
    key = parts.settings.state.config_key(name)
    saved = parts.state.get(key)
    if saved is None:
        run.log.info("destroy_synthesizes", reason="no saved configuration")
        synthesized = synth(run)
        init(run)
        return Hooks.of(json.loads(synthesized.file.read_text()))
    check_saved_config(run, saved, f"s3://{parts.settings.state.bucket}/{key}")
    run.workspace.write_config(saved)
    init(run)
    return Hooks.of(json.loads(saved))


def check_saved_config(run: Run, saved: bytes, where: str) -> None:
    """Only the configuration envctl saved runs.

    Anyone who can write the bucket could otherwise make a destroy run a provisioner of theirs,
    or point it at another state. Known digests: the one the last applying replica wrote into
    the inventory entry (this store's may be older, after another replica led) and the record's
    own (the entry's write may have failed after the configuration was saved).
    """
    name = run.env.name
    found = hashlib.sha256(saved).hexdigest()
    known = {d for d in (_saved_config_digest(run), run.before.config_digest if run.before else "") if d}
    expected = " or ".join(sorted(d[:12] for d in known))
    if known and found not in known:
        raise StalledError(
            Reason.CONFIG_CHANGED,
            f"{where} is not the configuration envctl saved at {name}'s last apply (sha256 "
            f"{found[:12]}, saved {expected}); nothing was run. Restore it, or "
            f"delete it to destroy with a fresh synth, then `envctl destroy {name} --confirm`",
        )
    try:
        check_backend(json.loads(saved), run.parts.backend(name), where)
    except (ValueError, SynthError) as error:
        raise StalledError(Reason.CONFIG_CHANGED, f"{error}; nothing was run") from None


def _saved_config_digest(run: Run) -> str:
    """The config_digest of the inventory entry ("" when it has none or is unreadable)."""
    try:
        entry = run.parts.state.read_inventory(run.env.name)
    except TransientError:
        return ""
    return str(entry.get("config_digest") or "") if isinstance(entry, dict) else ""


def destroy(run: Run) -> None:
    run.parts.runner.destroy(run.workspace, **run.bind)


def after_destroy(run: Run, hooks: Hooks) -> None:
    """Leftovers a destroy cannot see (a late log group); a failure here is only logged."""
    try:
        run.parts.hooks.after_destroy(hooks)
    except TransientError as error:
        # Destroyed all the same; a leftover log group is adopted on the next creation.
        run.log.warning("after_destroy_failed", error=str(error))
