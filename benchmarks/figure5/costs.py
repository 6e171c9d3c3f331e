"""Measured costs of training and meta-testing, for time estimates (not for any result).

CPU milliseconds per environment step of one run in one worker process (one torch thread), from
``python -m benchmarks.figure5.measure --budget quick`` (one 15,000-step epoch of every algorithm
and env with the quick grids' settings, policy (32, 16), batched sampler; then the meta-test of
the result: 3 tasks x (5 + 1) rollouts of 1,000 steps, K = 5 steps, fresh critic fits), measured
2026-11-30 while the 2 cores ran 4-5 other processes (load 4.5-5.5). CPU time rather than wall
time, so that the numbers stand for a run with a core of its own (a 2-worker comparison on 2
cores); under that contention they still come out about 1.2-1.7x above CPU times measured at
load ~1 (e.g. CPO on Point-Circle 1.5 ms/step then, 2.6 here), so estimates made from them err
on the long side.

======================  ===================  =======================  ===================
training, ms/step       MetaPointCircle-v0   MetaCarCircleHazard-v0   MetaPointButton-v0
======================  ===================  =======================  ===================
MetaCPO                 0.73                 1.29                     1.30
MetaTRPO                0.73                 1.25                     1.16
CPO (OmniSafe's)        2.56                 2.85                     3.17
CPOCorrected            2.60                 3.12                     3.07
TRPO                    2.13                 3.64                     2.37
meta-test, per test     0.84-0.97            1.83-2.26                1.25-1.71
env step
======================  ===================  =======================  ===================

MetaCPO/MetaTRPO step all 5 tasks of an inner step together (the batched sampler), OmniSafe's CPO
and TRPO one environment through OmniSafe's adapter: hence ~2-3x per step.
"""

from __future__ import annotations

from typing import Any

from benchmarks.figure5.budget import Job

#: (algorithm, env id) -> seconds per training env step (the table above).
TRAIN_SECONDS_PER_STEP: dict[tuple[str, str], float] = {
    ('MetaCPO', 'MetaPointCircle-v0'): 0.73e-3,
    ('MetaTRPO', 'MetaPointCircle-v0'): 0.73e-3,
    ('CPO', 'MetaPointCircle-v0'): 2.56e-3,
    ('CPOCorrected', 'MetaPointCircle-v0'): 2.60e-3,
    ('TRPO', 'MetaPointCircle-v0'): 2.13e-3,
    ('MetaCPO', 'MetaCarCircleHazard-v0'): 1.29e-3,
    ('MetaTRPO', 'MetaCarCircleHazard-v0'): 1.25e-3,
    ('CPO', 'MetaCarCircleHazard-v0'): 2.85e-3,
    ('CPOCorrected', 'MetaCarCircleHazard-v0'): 3.12e-3,
    ('TRPO', 'MetaCarCircleHazard-v0'): 3.64e-3,
    ('MetaCPO', 'MetaPointButton-v0'): 1.30e-3,
    ('MetaTRPO', 'MetaPointButton-v0'): 1.16e-3,
    ('CPO', 'MetaPointButton-v0'): 3.17e-3,
    ('CPOCorrected', 'MetaPointButton-v0'): 3.07e-3,
    ('TRPO', 'MetaPointButton-v0'): 2.37e-3,
}

#: Per env: the meta-learners and the stock algorithms when the pair is not in the table.
DEFAULT_TRAIN_SECONDS_PER_STEP: dict[str, dict[str, float]] = {
    'MetaPointCircle-v0': {'meta': 0.75e-3, 'stock': 2.6e-3},
    'MetaCarCircleHazard-v0': {'meta': 1.3e-3, 'stock': 3.6e-3},
    'MetaPointButton-v0': {'meta': 1.3e-3, 'stock': 3.2e-3},
}

#: env id -> seconds per meta-test env step (rollouts, adaptation steps, critic fits): the largest
#: of the five algorithms' (the table above).
TEST_SECONDS_PER_STEP: dict[str, float] = {
    'MetaPointCircle-v0': 0.97e-3,
    'MetaCarCircleHazard-v0': 2.26e-3,
    'MetaPointButton-v0': 1.71e-3,
}

#: Start-up of a run (imports, env and model construction, first saves).
RUN_OVERHEAD_SECONDS = 3.0


def _per_step(table: dict[str, float], env_id: str, fallback: float) -> float:
    return table.get(env_id, fallback)


def train_seconds(job: Job) -> float:
    """Estimated seconds of one worker to train ``job``."""
    per_step = TRAIN_SECONDS_PER_STEP.get((job.algo, job.env_id))
    if per_step is None:
        kind = 'meta' if job.algo.startswith('Meta') else 'stock'
        per_step = DEFAULT_TRAIN_SECONDS_PER_STEP.get(job.env_id, {}).get(kind, 3e-3)
    return RUN_OVERHEAD_SECONDS + per_step * job.total_steps


def test_seconds(job: Job, settings: dict[str, Any], checkpoints: int | None = None) -> float:
    """Estimated seconds of one worker to meta-test ``checkpoints`` of ``job``'s checkpoints."""
    count = len(job.checkpoints) if checkpoints is None else checkpoints
    steps = settings['num_tasks'] * (settings['adapt_steps'] + 1) * settings['rollout_steps']
    return count * (1.0 + steps * _per_step(TEST_SECONDS_PER_STEP, job.env_id, 2e-3))
