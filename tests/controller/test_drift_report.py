"""Drift reports from plan JSON: addresses, actions, attribute names, sensitive values masked."""

from __future__ import annotations

from controller.drift import SENSITIVE, fingerprint, report, summary

PLAN = {
    "resource_drift": [
        {
            "address": "aws_security_group.api",
            "change": {
                "actions": ["update"],
                "before": {"ingress": [{"from_port": 443}], "name": "api", "password": "old"},
                "after": {"ingress": [{"from_port": 22}], "name": "api", "password": "new"},
                "before_sensitive": {"password": True},
                "after_sensitive": {"password": True},
            },
        }
    ],
    "resource_changes": [
        {"address": "null_resource.same", "change": {"actions": ["no-op"], "before": {}, "after": {}}},
        {
            "address": "null_resource.gone",
            "change": {
                "actions": ["create"],
                "before": None,
                "after": {"triggers": {"a": "1"}},
                "after_unknown": {"id": True},
                "after_sensitive": {},
            },
        },
        {
            "address": "null_resource.token",
            "change": {
                "actions": ["delete", "create"],
                "before": {"triggers": {"token": "s3cr3t"}},
                "after": {"triggers": {"token": "other"}},
                "before_sensitive": {"triggers": {"token": True}},
                "after_sensitive": {"triggers": {"token": True}},
            },
        },
    ],
}


def test_report_lists_drift_then_planned_changes_without_no_ops():
    """Entries come from resource_drift and non-no-op resource_changes, with their actions."""
    entries = report(PLAN)
    assert [(e["address"], e["action"], e["source"]) for e in entries] == [
        ("aws_security_group.api", "update", "drift"),
        ("null_resource.gone", "create", "plan"),
        ("null_resource.token", "delete-create", "plan"),
    ]


def test_changed_attributes_are_named_and_sensitive_ones_masked():
    """Only changed attributes appear; sensitive ones (even nested) show (sensitive), never the value."""
    entries = report(PLAN)
    assert entries[0]["attributes"] == [
        {"name": "ingress", "before": [{"from_port": 443}], "after": [{"from_port": 22}]},
        {"name": "password", "before": SENSITIVE, "after": SENSITIVE},
    ]
    assert entries[2]["attributes"] == [{"name": "triggers", "before": SENSITIVE, "after": SENSITIVE}]
    text = str(entries)
    assert "s3cr3t" not in text and "old" not in text and "'new'" not in text


def test_unknown_and_long_values():
    """Values known only after apply say so; long values are cut."""
    plan = {
        "resource_changes": [
            {
                "address": "x.y",
                "change": {
                    "actions": ["update"],
                    "before": {"id": "1", "blob": "a" * 500},
                    "after": {"blob": "b" * 500},
                    "after_unknown": {"id": True},
                },
            }
        ]
    }
    (entry,) = report(plan)
    attributes = {a["name"]: a for a in entry["attributes"]}
    assert attributes["id"]["after"] == "(known after apply)"
    assert len(attributes["blob"]["before"]) <= 120 and attributes["blob"]["before"].endswith("...")


def test_fingerprint_follows_shape_not_values_and_summary_reads_well():
    """The same resources and attributes give the same fingerprint, whatever the values."""
    entries = report(PLAN)
    changed_values = report(
        {
            **PLAN,
            "resource_drift": [
                {
                    **PLAN["resource_drift"][0],
                    "change": {
                        **PLAN["resource_drift"][0]["change"],
                        "after": {"ingress": [], "name": "api", "password": "x"},
                    },
                }
            ],
        }
    )
    assert fingerprint(entries) == fingerprint(changed_values)
    assert fingerprint(entries) != fingerprint(entries[:1])
    assert summary(entries) == (
        "aws_security_group.api (update: ingress, password); null_resource.gone (create); "
        "null_resource.token (delete-create: triggers)"
    )
    assert report({}) == []
