"""Readers of synthesized Terraform JSON that do not care how cdktf names things."""

from __future__ import annotations

from typing import Any


def resources(synth: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every resource of a Terraform type, in a stable order."""
    return [synth["resource"][kind][key] for key in sorted(synth["resource"].get(kind, {}))]


def address(synth: dict[str, Any], kind: str, predicate: Any) -> str:
    """The Terraform address (`type.logical_id`) of the one resource matching predicate."""
    found = [f"{kind}.{key}" for key, value in synth["resource"][kind].items() if predicate(value)]
    assert len(found) == 1, found
    return found[0]


def output(synth: dict[str, Any], name: str) -> dict[str, Any]:
    """The output whose name is `name` whatever prefix or hash cdktf adds (seed failure 4)."""
    matches = [
        value
        for key, value in synth["output"].items()
        if key == name or key.lower().endswith(name) or f"_{name}_" in f"_{key.lower()}"
    ]
    assert len(matches) == 1, (name, sorted(synth["output"]))
    return matches[0]


def block(value: Any) -> dict[str, Any]:
    """A nested block, whether cdktf renders it as an object or a one-item list (seed failure 6)."""
    if isinstance(value, list):
        assert len(value) == 1, value
        return value[0]
    assert isinstance(value, dict), value
    return value
