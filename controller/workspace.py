"""Workspace: where one environment's run keeps its files (today: a directory under the workdir).

The steps of a run ask the workspace for the configuration, the plan, the state
Terraform could not upload and the applied marker; none of them builds a path.
A runner that starts Kubernetes Jobs would bring a workspace of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from controller.backend import env_dir

CONFIG_FILE = "main.tf.json"
PLAN_FILE = "tfplan"
ERRORED_STATE = "errored.tfstate"
"""What Terraform writes when it cannot upload the state it has."""
APPLIED_MARKER = ".envctl-applied"
"""Written after an apply: drift checks may reuse the directory as is."""


class Workspace:
    """One environment's files for its runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def of(cls, workdir: Path, name: str) -> Workspace:
        """`{workdir}/envs/{name}` (a name outside the file-name rule is refused)."""
        return cls(env_dir(workdir, name))

    @classmethod
    def scratch(cls, parent: Path, name: str) -> Workspace:
        """A directory of its own (a plan for people), removed with `clear`."""
        parent.mkdir(parents=True, exist_ok=True)
        return cls(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)))

    def exists(self) -> bool:
        return self.path.exists()

    def clear(self) -> None:
        """Remove every file of the workspace."""
        shutil.rmtree(self.path, ignore_errors=True)

    # --- the configuration ----------------------------------------------------------------------

    @property
    def config(self) -> Path:
        """The synthesized configuration (the synth worker writes it here)."""
        return self.path / CONFIG_FILE

    def read_config(self) -> bytes | None:
        return self.config.read_bytes() if self.config.exists() else None

    def write_config(self, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_bytes(data)

    # --- the plan, the applied marker and an unsaved state ------------------------------------

    def drop_plan(self) -> None:
        """The saved plan may hold sensitive values; it is not kept past its use."""
        (self.path / PLAN_FILE).unlink(missing_ok=True)

    def applied(self) -> str:
        """The digest this directory was last applied at ("" when unknown)."""
        marker = self.path / APPLIED_MARKER
        return marker.read_text() if marker.exists() else ""

    def mark_applied(self, digest: str) -> None:
        (self.path / APPLIED_MARKER).write_text(digest)

    def errored_state(self) -> bytes | None:
        """A state Terraform wrote because it could not upload it, if any."""
        errored = self.path / ERRORED_STATE
        return errored.read_bytes() if errored.exists() else None

    def drop_errored_state(self) -> None:
        (self.path / ERRORED_STATE).unlink(missing_ok=True)
