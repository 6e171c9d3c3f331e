"""A torchrun worker for ``test_parallel.py`` next to it (not a test module itself).

    torchrun --nproc_per_node 2 tests/omnisafe_metacpo/distributed/parallel_worker.py SCENARIO DIR

Each rank runs ``SCENARIO`` with the real process group (gloo) and writes what it saw to
``DIR/rank-R.json`` for the test to compare across ranks.
"""

from __future__ import annotations

import json
import os
import sys
import time

import omnisafe  # noqa: F401  (registers the plug-in, as in a training rank)
import torch
from omnisafe.common.normalizer import Normalizer
from omnisafe.utils.config import Config

from omnisafe_metacpo.distributed import collectives as ranks
from omnisafe_metacpo.distributed import health, launch, normalizer_sync


def collectives() -> dict:
    """Task order, weighted averages and the normaliser rule with an uneven split (5 over 2)."""
    rank = ranks.rank()
    mine = ranks.task_indices(5)
    local = torch.tensor([[float(i), 10.0 * i] for i in mine], dtype=torch.float64)
    ordered = ranks.gather_tasks(local, 5)
    average = ranks.weighted_average(torch.tensor([float(rank + 1)]), weight=rank + 1)
    # Task i has i + 1 rows of value i (uneven amounts per task and per rank).
    task_data = ranks.gather_task_data(
        [torch.full((i + 1, 2), float(i)) for i in mine], 5)

    # Each rank pushes different observations; afterwards all ranks must hold the statistics of
    # the start state plus every rank's observations.
    normalizer = Normalizer((3,))
    normalizer.normalize(torch.arange(6.0).reshape(2, 3))  # a shared start state
    sync = normalizer_sync.NormalizerSync(normalizer)
    sync.begin()
    generator = torch.Generator().manual_seed(rank)
    for _ in range(4 + rank):  # uneven amounts of data, pushed in several batches
        normalizer.normalize(torch.randn((3, 3), generator=generator) * (rank + 1))
    sync.end()
    return {
        'mine': mine,
        'ordered': ordered.tolist(),
        'average': average.tolist(),
        'task_data': [t.tolist() for t in task_data],
        'normalizer': {k: v.tolist() for k, v in normalizer.state_dict().items()},
    }


def diverged() -> dict:
    """Different states on the two ranks must stop both with RanksDivergedError."""
    try:
        health.check_identical(health.state_digest([torch.tensor([ranks.rank()])]),
                                 'the test state')
    except health.RanksDivergedError as error:
        return {'error': str(error)}
    return {'error': None}


def raises() -> dict:
    """Rank 1 raises inside ``rank_failures``; rank 0 waits in a collective."""
    with health.rank_failures(timeout=5):
        if ranks.rank() == 1:
            raise ValueError('injected failure of rank 1')
        health.gather_digests('00')
    return {}


def timeout() -> dict:
    """Rank 1 hangs; rank 0's collective must time out after train_cfgs.dist_timeout."""
    with health.rank_failures(timeout=3):
        if ranks.rank() == 1:
            time.sleep(600)
        health.gather_digests('00')
    return {}


def main() -> None:
    scenario, out_dir = sys.argv[1], sys.argv[2]
    # What AlgoWrapper does for MetaCPO in a rank: the group with train_cfgs.dist_timeout.
    timeout_s = 3 if scenario == 'timeout' else 60
    launch.init_process_group(Config.dict2config(
        {'train_cfgs': {'device': 'cpu', 'dist_timeout': timeout_s}}))
    result = globals()[scenario]()
    result['world_size'] = ranks.world_size()
    with open(os.path.join(out_dir, f'rank-{ranks.rank()}.json'), 'w',
              encoding='utf-8') as file:
        json.dump(result, file)
    if scenario in ('collectives', 'diverged'):  # both ranks got here: shut the group down
        # Exiting with the gloo group alive let a rank's interpreter shutdown race gloo's threads
        # ("terminate called without an active exception", exit code -6) once in a loaded CI run.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
