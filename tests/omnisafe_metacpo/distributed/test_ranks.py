"""A single process's :class:`~omnisafe_metacpo.distributed.ranks.Ranks`: nothing to do."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from omnisafe_metacpo.distributed.ranks import Ranks, SingleProcess


def test_without_torchrun_every_rank_method_is_the_identity_or_nothing() -> None:
    ranks = Ranks.current(5)
    assert isinstance(ranks, SingleProcess)
    assert ranks.indices == [0, 1, 2, 3, 4] and ranks.is_main
    rows = torch.arange(10.0).reshape(5, 2)
    assert ranks.gather_tasks(rows) is rows
    assert ranks.gather_task_data([rows, rows]) == [rows, rows]
    value = torch.tensor([1.5])
    assert ranks.mean_over(123)(value) is value
    assert ranks.owns(0) and ranks.owns(1)
    stored = []
    ranks.store_once(SimpleNamespace(store=stored.append), {'a': 1})
    assert stored == [{'a': 1}]
    ranks.check_identical([rows], 'rows')
    assert ranks.describe(SimpleNamespace(device='cpu', dist_timeout=1)) == []
    assert ranks.report() == []
    with ranks.failures(1.0), ranks.local_gradients():
        pass
    sync = ranks.normalizer_sync(None)
    sync.begin()
    sync.end()
