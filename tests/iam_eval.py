"""A small evaluator of IAM policy documents: enough to prove what a role can and cannot do.

Explicit Deny wins; then any Allow; else the implicit deny. Actions and resources match with
IAM's `*` and `?` wildcards; `NotAction` is honoured; conditions: StringEquals, StringLike,
ArnEquals, ArnLike and Null, with IAM's rule that a condition on a key the request lacks does
not match (Null excepted). Permissions boundaries are a second set of documents that must
also allow. Not modelled: NotResource, IfExists, policy variables, SCPs, resource policies.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

Document = Mapping[str, Any]


def _list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _match(pattern: str, value: str, *, case: bool = False) -> bool:
    regex = fnmatch.translate(pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _condition_holds(condition: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, tests in condition.items():
        for key, wanted in tests.items():
            values = _list(wanted)
            given = context.get(key)
            if operator == "Null":
                absent = given is None
                if any((v.lower() == "true") != absent for v in values):
                    return False
                continue
            if given is None:
                return False
            if operator in ("StringEquals", "ArnEquals"):
                ok = given in values
            elif operator in ("StringLike", "ArnLike"):
                ok = any(_match(v, given, case=True) for v in values)
            else:
                raise AssertionError(f"condition operator {operator} is not modelled")
            if not ok:
                return False
    return True


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in statement:
        if not any(_match(a, action) for a in _list(statement["Action"])):
            return False
    elif any(_match(a, action) for a in _list(statement["NotAction"])):
        return False
    if not any(_match(r, resource, case=True) for r in _list(statement["Resource"])):
        return False
    return _condition_holds(statement.get("Condition", {}), context)


def decide(
    policies: Iterable[Document], action: str, resource: str, context: Mapping[str, str] | None = None
) -> str:
    """`Allow`, `Deny` (explicit) or `ImplicitDeny` for one request against identity policies."""
    context = context or {}
    statements = [s for p in policies for s in p["Statement"] if _applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in statements):
        return "Deny"
    return "Allow" if any(s["Effect"] == "Allow" for s in statements) else "ImplicitDeny"


def allowed(
    policies: Iterable[Document],
    action: str,
    resource: str,
    context: Mapping[str, str] | None = None,
    boundary: Iterable[Document] | None = None,
) -> bool:
    """Whether the identity policies (within `boundary`, when given) allow the request."""
    if decide(policies, action, resource, context) != "Allow":
        return False
    return boundary is None or decide(boundary, action, resource, context) == "Allow"
