"""Where an environment's state lives and where its files go: the S3 backend block and paths.

The controller owns the backend: whatever backend a stack declares, the synth
worker replaces it with this block, and `check_backend` refuses a synthesized
stack whose backend differs. This module imports nothing from the stack.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.environments import NAME_PATTERN, NAME_RULE
from controller.errors import EnvctlError
from controller.settings import StateSettings


def backend_block(state: StateSettings, name: str) -> dict[str, Any]:
    """The `terraform.backend.s3` block of one environment: its own key, always."""
    config: dict[str, Any] = {
        "bucket": state.bucket,
        "key": state.key(name),
        "region": state.region,
        "encrypt": True,
    }
    if state.lock == "dynamodb":
        config["dynamodb_table"] = state.lock_table
    else:
        # Terraform's own lock file beside the state (`use_lockfile`, Terraform >= 1.10).
        config["use_lockfile"] = True
    if state.endpoint:
        # An S3-compatible store or the sandbox: the `endpoints` block and `use_path_style`
        # (Terraform >= 1.6, envctl's minimum), and no AWS account lookups.
        config["skip_credentials_validation"] = True
        config["skip_metadata_api_check"] = True
        config["skip_region_validation"] = True
        config["endpoints"] = {"s3": state.endpoint, "dynamodb": state.endpoint}
        config["use_path_style"] = True
        config["skip_requesting_account_id"] = True
    return config


def env_dir(workdir: Path, name: str) -> Path:
    """`{workdir}/envs/{name}`; a name outside the file-name rule (`..`, `a/b`) is refused."""
    if not NAME_PATTERN.fullmatch(name):
        raise EnvctlError(f"environment name {name!r} is not allowed; expected {NAME_RULE}")
    path = workdir / "envs" / name
    if not path.resolve().is_relative_to((workdir / "envs").resolve()):
        raise EnvctlError(f"environment name {name!r} leads outside {workdir / 'envs'}")
    return path
