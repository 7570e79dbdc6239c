"""The Terraform runner's text handling: versions, redaction, error excerpts, lock holders."""

from __future__ import annotations

import pytest

from controller.errors import TerraformError
from controller.terraform import Redactor, _excerpt, _lock_field, parse_version


def test_parse_version():
    """Versions are read from plain and prefixed forms."""
    assert parse_version("1.0.3") == (1, 0, 3)
    assert parse_version("Terraform v1.10.12\non linux_amd64") == (1, 10, 12)
    with pytest.raises(TerraformError, match="cannot read a Terraform version"):
        parse_version("dev")


def test_redactor_hides_known_values_and_assignments():
    """Secret values from the environment and secret-looking assignments never reach logs."""
    redact = Redactor(["s3cr3t-value", "", "abc"])
    assert redact("key s3cr3t-value here") == "key *** here"
    assert redact('password = "hunter2"') == "password = ***"
    assert redact("db_token: abc.def") == "db_token: ***"
    assert redact("plain line") == "plain line"


LOCK_OUTPUT = """
Error: Error acquiring the state lock

Error message: ConditionalCheckFailedException: The conditional request failed
Lock Info:
  ID:        1234-abcd
  Path:      bucket/envctl/pr1/terraform.tfstate
  Operation: OperationTypeApply
  Who:       alice@laptop
  Version:   1.0.3
"""


def test_lock_holder_is_read_from_terraform_output():
    """The holder and lock ID come from Terraform's Lock Info block."""
    assert _lock_field(LOCK_OUTPUT, "Who") == "alice@laptop"
    assert _lock_field(LOCK_OUTPUT, "ID") == "1234-abcd"
    assert _lock_field("nothing", "Who") is None


def test_excerpt_starts_at_the_first_error():
    """The excerpt is Terraform's error block, not the plan before it."""
    lines = ["Plan: 1 to add", "null_resource.a: Creating...", "", "│ Error: boom happened", "│ details"]
    assert _excerpt(lines) == "│ Error: boom happened\n│ details"
    assert _excerpt(["a", "", "b"]) == "a\nb"
