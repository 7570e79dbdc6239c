"""Runner: where Terraform runs for a workspace (local subprocesses today, Kubernetes Jobs later).

The steps of a run call these and nothing else to run Terraform; the local
implementation is `controller.terraform.TerraformRunner`, the sole owner of
Terraform processes.
"""

from __future__ import annotations

from typing import Any, Protocol

from controller.errors import StateLocked
from controller.workspace import Workspace


class Runner(Protocol):
    """Terraform commands in one environment's workspace."""

    identity: str
    """Who this runner's locks name (`user@host`)."""

    def version(self) -> tuple[int, int, int]: ...

    def init(self, workspace: Workspace, **bind: Any) -> None: ...

    def plan(self, workspace: Workspace, *, lock: bool = True, **bind: Any) -> bool:
        """Plan into the workspace's plan; True when it has changes."""
        ...

    def apply(self, workspace: Workspace, **bind: Any) -> None:
        """Apply exactly the saved plan."""
        ...

    def destroy(self, workspace: Workspace, **bind: Any) -> None: ...

    def show(self, workspace: Workspace, **bind: Any) -> dict[str, Any]: ...

    def show_text(self, workspace: Workspace, **bind: Any) -> str: ...

    def state_push(self, workspace: Workspace, state: bytes, **bind: Any) -> None: ...

    def force_unlock(self, workspace: Workspace, lock_id: str, **bind: Any) -> None: ...

    def busy(self, workspace: Workspace) -> bool:
        """Whether a Terraform process (this one's or an earlier envctl's) still runs there."""
        ...

    def left_by_us(self, locked: StateLocked) -> float | None:
        """When a lock this runner's identity took was created; None if it is not ours."""
        ...

    def interrupt_all(self, grace_seconds: float | None = None) -> int: ...

    def running(self) -> int: ...
