"""The inventory beside the state: what envctl knows outlives its status database.

Each environment has `{key_prefix}/{name}/envctl.json` next to its state: the
spec, what was attempted and applied, and which repository (URL, branch,
folder) it came from. It is written before every apply's plan and after every
successful apply, and deleted last on destroy. A replica taking over
leadership, or a controller that lost its workdir, adopts the entries of its
own repository; the entry is also how ownership is checked before every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import structlog

from controller.environments import NAME_PATTERN, NAME_RULE
from controller.errors import TransientError
from controller.settings import Settings
from controller.source import Revision
from controller.statefiles import StateFiles
from controller.store import StatusStore
from controller.types import Environment, Phase, Reason

log = structlog.get_logger("envctl.inventory")
INVENTORY_VERSION = 1


class Inventory:
    """Reads, writes and adopts inventory entries for one controller's repository."""

    def __init__(
        self, settings: Settings, state: StateFiles, store: StatusStore, clock: Callable[[], float]
    ) -> None:
        self.settings = settings
        self.state = state
        self.store = store
        self.clock = clock
        self._not_adopted: set[str] = set()
        """Entries already found unusable (logged once per process)."""

    def source(self) -> dict[str, str]:
        """This controller's repository, as entries name it."""
        repository = self.settings.repository
        return {"url": repository.url, "branch": repository.branch, "path": repository.path}

    def write(
        self, env: Environment, revision: Revision, attempted: str, applied: str = "", config_digest: str = ""
    ) -> None:
        """Write the environment's entry: what was attempted, and applied once it is (with the
        SHA-256 of the configuration saved for its destroy, which a new leader adopts)."""
        self.state.write_inventory(
            env.name,
            {
                "version": INVENTORY_VERSION,
                "source": self.source(),
                "spec": env.spec(),
                "revision": revision.sha,
                "attempted_digest": attempted,
                "applied_digest": applied,
                "applied_revision": revision.sha if applied else "",
                "config_digest": config_digest,
                "written_at": self.clock(),
            },
        )

    def owner_conflict(self, name: str) -> str | None:
        """Why another repository owns `name` (its entry names it), or None when nothing does."""
        body = self.state.get(self.settings.state.inventory_key(name))
        try:
            entry = json.loads(body) if body is not None else None
        except ValueError:
            return None
        if not isinstance(entry, dict) or entry.get("source") == self.source():
            return None
        key = self.settings.state.inventory_key(name)
        return (
            f"s3://{self.settings.state.bucket}/{key} names the repository {entry.get('source')!r}, "
            f"not this controller's {self.source()!r}: both declare {name!r} on the same bucket and "
            "key prefix. Nothing was run. Rename one of them, or give the controllers different "
            "state.key_prefix values"
        )

    def adopt(self) -> list[str]:
        """Records for environments in the inventory that the status store lacks or thinks destroyed.

        A replica taking over leadership, or a lost workdir, starts with an empty store; the
        inventory beside the state says which environments may have resources, so a removed
        preview is still destroyed and a removed persistent environment still orphaned. It only
        adds knowledge: a failed or empty listing changes nothing. Returns the adopted names.
        """
        try:
            names = self.state.inventory_names()
        except TransientError as error:
            log.warning("inventory_unreadable", error=str(error))
            return []
        recorded = self.store.load_all()
        adopted = []
        for name in sorted(names - self._not_adopted):
            record = recorded.get(name)
            if record is not None and record.phase is not Phase.DESTROYED:
                continue
            try:
                entry = self.state.read_inventory(name)
            except TransientError as error:
                log.warning("inventory_unreadable", env=name, error=str(error))
                continue
            env, problem = self._adoptable(name, entry)
            if env is None or isinstance(entry, str):
                # What it says will not change by itself: reported once per process.
                self._not_adopted.add(name)
                log.warning("inventory_entry_not_adopted", env=name, problem=problem)
                continue
            applied = str(entry.get("applied_digest") or "")
            self.store.commit(
                name,
                dict(
                    kind=env.kind,
                    spec=env.spec(),
                    phase=Phase.READY if applied else Phase.FAILED,
                    reason=Reason.ADOPTED,
                    message=(
                        f"adopted from the inventory entry {self.settings.state.inventory_key(name)}: "
                        + ("applied" if applied else "an apply was attempted")
                        + f" at {str(entry.get('revision', ''))[:12]}; the status database had no record"
                    ),
                    revision=str(entry.get("revision", "")),
                    applied_digest=applied,
                    applied_kind=env.kind if applied else "",
                    applied_revision=str(entry.get("applied_revision", "")) if applied else "",
                    attempted_digest=str(entry.get("attempted_digest", "")),
                    # What the leader that applied it saved; a stale one of this store's is replaced.
                    config_digest=str(entry.get("config_digest") or "") if applied else "",
                    failures=0,
                    next_attempt_at=0.0,
                    destroy_confirmed=False,
                ),
            )
            log.info("environment_adopted", env=name, kind=env.kind, applied=bool(applied))
            adopted.append(name)
        return adopted

    def _adoptable(self, name: str, entry: dict[str, Any] | str) -> tuple[Environment | None, str]:  # noqa: PLR0911 - one guard clause per reason an entry is not adoptable
        """The environment of an inventory entry this controller wrote, or why not."""
        if isinstance(entry, str):
            return None, entry
        if not NAME_PATTERN.fullmatch(name):
            # Every path envctl builds from a name (work dirs, keys) assumes the file-name rule.
            return None, f"inventory name {name!r} is not allowed; expected {NAME_RULE}"
        where = f"s3://{self.settings.state.bucket}/{self.settings.state.inventory_key(name)}"
        if entry.get("version") != INVENTORY_VERSION:
            return None, f"{where}: version {entry.get('version')!r} is not {INVENTORY_VERSION}"
        if entry.get("source") != self.source():
            return None, (
                f"{where}: written for the repository {entry.get('source')!r}, not this controller's "
                f"{self.source()!r}; left to its own controller"
            )
        try:
            env = Environment.from_spec(dict(entry["spec"]))
        except (KeyError, TypeError, ValueError) as error:
            return None, f"{where}: spec is not an environment: {error!r}"
        if env.name != name:
            return None, f"{where}: spec names {env.name!r}, not {name!r}"
        return env, ""
