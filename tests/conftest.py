"""Session-wide fixtures: the test toolchain (Terraform + null provider mirror)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")


@dataclass(frozen=True)
class Toolchain:
    """Where scripts/install-toolchain.sh put Terraform and its provider mirror."""

    terraform: Path
    cli_config: Path
    mirror: Path

    def env(self, **extra: str) -> dict[str, str]:
        """An environment for running Terraform offline against the mirror."""
        env = dict(os.environ)
        env.update(TF_CLI_CONFIG_FILE=str(self.cli_config), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    """The installed test toolchain; `make test` installs it before pytest runs."""
    tools = Path(os.environ.get("ENVCTL_TOOLS_DIR", ROOT / ".tools"))
    chain = Toolchain(
        terraform=tools / "bin" / "terraform",
        cli_config=tools / "terraformrc",
        mirror=tools / "mirror",
    )
    missing = [str(p) for p in (chain.terraform, chain.cli_config, chain.mirror) if not p.exists()]
    if missing:
        pytest.fail(f"test toolchain missing ({', '.join(missing)}): run `make tools`")
    return chain
