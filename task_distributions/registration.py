"""Registration of the Meta* environment ids with safety-gymnasium."""

from __future__ import annotations


def register_safety_gymnasium_envs() -> None:
    """Register the Meta* ids (idempotent)."""
