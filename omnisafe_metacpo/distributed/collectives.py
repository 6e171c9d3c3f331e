"""Collectives over torch.distributed ranks whose result is the same on every rank, bit for bit.

The M tasks of a meta-iteration are independent until the meta step, so they are spread over the
ranks: every rank draws the same M tasks from the run's seed and adapts its share, tasks
``rank, rank + N, rank + 2N, ...`` (:func:`task_indices`); task i keeps its rollout seeds, so
which tasks are trained on, with which rollout seeds, does not depend on N. Whatever the meta
step and the logs need from all tasks is gathered in task order (:func:`gather_tasks`) and
reduced the same way on every rank (each rank reduces the same gathered values in the same
order; an all-reduce leaves that order to the backend), so every rank takes the same decisions
and the same step.

The critics are fitted on the union of all ranks' rollouts (:func:`gather_task_data`), exactly
as one rank would, the reward critic by one rank and the cost critic by another
(:func:`owner`, :func:`share_from`), without a collective per minibatch
(:func:`local_gradients`).

With one process (no torchrun) every collective here is the identity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from omnisafe.utils import distributed


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return distributed.get_rank()


def world_size() -> int:
    """Number of ranks (1 without torchrun)."""
    return distributed.world_size()


def _comm_device() -> torch.device:
    """Where a collective's buffers must live: the GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def all_gather(local: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``local`` (one shape on all ranks), in rank order, on ``local``'s device."""
    if world_size() == 1:
        return [local]
    device = _comm_device()
    sent = local.detach().to(device).contiguous()
    parts = [torch.empty_like(sent) for _ in range(world_size())]
    distributed.all_gather(parts, sent)
    return [part.to(local.device) for part in parts]


def gather_rows(local: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``local`` (any number of rows, same trailing shape), in rank order."""
    if world_size() == 1:
        return [local]
    sizes = [int(c.item()) for c in all_gather(torch.tensor([local.shape[0]]))]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    return [part[:size] for part, size in zip(all_gather(padded), sizes, strict=True)]


def task_indices(num_tasks: int) -> list[int]:
    """The tasks of this rank: ``rank, rank + N, rank + 2N, ...`` of ``range(num_tasks)``."""
    return list(range(rank(), num_tasks, world_size()))


def gather_tasks(local: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Per-task rows of all ranks in task order: row i is task i's, wherever it was adapted.

    Args:
        local: One row per task of :func:`task_indices`, in that order.
        num_tasks: M, the tasks of the meta-iteration.
    """
    size = world_size()
    if size == 1:
        return local
    most = -(-num_tasks // size)  # the rank with the most tasks has ceil(M / N)
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local.detach()
    ordered = torch.empty((num_tasks, *local.shape[1:]), dtype=local.dtype, device=local.device)
    for source, part in enumerate(all_gather(padded)):
        ordered[source::size] = part[: len(range(source, num_tasks, size))]
    return ordered


def weighted_average(value: torch.Tensor, weight: float) -> torch.Tensor:
    """sum_r weight_r * value_r / sum_r weight_r over ranks (e.g. means over local samples)."""
    if world_size() == 1:
        return value
    weights = [float(w) for w in all_gather(torch.tensor([float(weight)], dtype=torch.float64))]
    total = sum(weights)
    result = torch.zeros_like(value)
    for part, share in zip(all_gather(value), weights, strict=True):
        result = result + part * (share / total)  # rank order: the same sum on every rank
    return result


def gather_task_data(local: Sequence[torch.Tensor], num_tasks: int) -> list[torch.Tensor]:
    """Per-task tensors of all ranks in task order (each any number of rows, same trailing shape).

    One collective for the lot (two ``all_gather`` calls: sizes, then the padded rows).

    Args:
        local: One tensor per task of :func:`task_indices`, in that order.
        num_tasks: M, the tasks of the meta-iteration.
    """
    size = world_size()
    if size == 1:
        return list(local)
    counts = torch.tensor([t.shape[0] for t in local], dtype=torch.int64)
    parts = gather_rows(torch.cat(list(local)))
    sizes = gather_tasks(counts[:, None], num_tasks)[:, 0].tolist()
    ordered: list[torch.Tensor] = []
    offsets = [0] * size
    for task in range(num_tasks):
        source = task % size
        ordered.append(parts[source][offsets[source]: offsets[source] + sizes[task]])
        offsets[source] += sizes[task]
    return ordered


@contextlib.contextmanager
def local_gradients() -> Iterator[None]:
    """OmniSafe's ``distributed.avg_grads`` as a no-op while every rank fits the same data.

    OmniSafe's ``_update_reward_critic`` / ``_update_cost_critic`` average the gradients of
    every parameter over ranks at every minibatch (one collective per parameter per minibatch,
    which costs more than the minibatch's own compute). When every rank
    holds the union of the data, shuffles it with the same generator and starts from the same
    critics, the ranks' gradients are already equal, so the average is skipped; the loss,
    critic-norm penalty, clipping and optimiser step stay OmniSafe's. Patching the module
    attribute works because ``policy_gradient`` calls ``distributed.avg_grads`` through the
    module at call time.
    """
    original = distributed.avg_grads
    distributed.avg_grads = lambda module: None  # type: ignore[assignment]
    try:
        yield
    finally:
        distributed.avg_grads = original


def owner(index: int) -> int:
    """The rank that computes item ``index`` of a few independent ones (``index % N``)."""
    return index % world_size()


def share_from(source: int, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Give every rank ``source``'s parameters and optimiser state of ``module`` (bit for bit).

    One ``broadcast_object_list`` of the two state dicts: the optimiser's state is created on
    its first step, so a rank that did not fit the module may not have one to copy into.
    """
    if world_size() == 1:
        return
    mine = source == rank()
    payload = [(module.state_dict(), optimizer.state_dict()) if mine else None]
    dist.broadcast_object_list(payload, src=source, device=_comm_device())
    if not mine:
        module_state, optimizer_state = payload[0]
        module.load_state_dict(module_state)
        optimizer.load_state_dict(optimizer_state)
