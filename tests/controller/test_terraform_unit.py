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
  Version:   1.15.5
  Created:   2026-11-30 08:55:31.595301451 +0000 UTC
  Info:
"""


def test_lock_holder_is_read_from_terraform_output():
    """The holder and lock ID come from Terraform's Lock Info block."""
    assert _lock_field(LOCK_OUTPUT, "Who") == "alice@laptop"
    assert _lock_field(LOCK_OUTPUT, "ID") == "1234-abcd"
    assert _lock_field("nothing", "Who") is None
    boxed = "│ Lock Info:\n│   ID:        5678\n│   Who:       root@pod\n"
    assert (_lock_field(boxed, "ID"), _lock_field(boxed, "Who")) == ("5678", "root@pod")


def test_excerpt_starts_at_the_first_error():
    """The excerpt is Terraform's error block, not the plan before it."""
    lines = ["Plan: 1 to add", "null_resource.a: Creating...", "", "│ Error: boom happened", "│ details"]
    assert _excerpt(lines) == "│ Error: boom happened\n│ details"
    assert _excerpt(["a", "", "b"]) == "a\nb"


def test_a_lock_error_names_holder_operation_time_and_id():
    """The StateLocked message has everything an operator needs to decide about the lock."""
    from controller.terraform import lock_created, lock_error

    locked = lock_error(LOCK_OUTPUT, "excerpt", env="pr80")
    assert str(locked).startswith(
        "state lock held by alice@laptop (operation Apply, taken 2026-11-30 08:55:31.595301451 +0000 UTC, "
        "lock ID 1234-abcd); not force-unlocked. If that holder is gone: "
        "envctl unlock pr80 1234-abcd --confirm"
    )
    assert lock_created(locked.created) == 1_796_028_931.595301451
    assert lock_created("2026-11-30T08:55:31Z") == 1_796_028_931.0
    assert lock_created("yesterday") is None
