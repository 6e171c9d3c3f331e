"""Shared set-up: safety-gymnasium importable on Python 3.11+ and the Meta* ids registered.

Inside the project's venv ``omnisafe_metacpo.pth`` imports the start-up hook at interpreter
start; importing it here too makes the tests also run from a plain ``PYTHONPATH`` checkout (the
hook patches safety-gymnasium's dataclasses before it is imported and registers the ids after).
Both the import and the explicit registration are idempotent.
"""

from __future__ import annotations

# The start-up hook must be imported before safety_gymnasium is.
import _omnisafe_metacpo_hook  # noqa: F401

# isort: split
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import safety_gymnasium  # noqa: F401

from task_distributions.registration import register_safety_gymnasium_envs

register_safety_gymnasium_envs()

@pytest.fixture
def rollout() -> Callable[..., list[np.ndarray]]:
    """Run ``steps`` seeded random steps, resetting at episode ends; return every observation."""

    def run(env: Any, steps: int, seed: int = 0, on_reset: Callable[[], None] | None = None):
        rng = np.random.default_rng(seed)
        observations = [env.reset(seed=seed)[0]]
        if on_reset is not None:
            on_reset()
        for _ in range(steps):
            obs, _, _, terminated, truncated, _ = env.step(rng.uniform(-1, 1, size=2))
            observations.append(obs)
            if terminated or truncated:
                observations.append(env.reset()[0])
                if on_reset is not None:
                    on_reset()
        return observations

    return run
