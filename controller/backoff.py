"""The one backoff formula: failed applies, pull-request feedback and alert deliveries all use it."""

from __future__ import annotations


def delay(attempt: int, base: float, cap: float = float("inf"), jitter: float = 1.0) -> float:
    """Seconds before retry `attempt` (1, 2, ...): base * 2^(attempt-1), capped at `cap`, times
    0.5..1 as `jitter` goes 0..1 (1: no jitter)."""
    return float(min(base * 2 ** max(attempt - 1, 0), cap) * (0.5 + 0.5 * jitter))
