"""The OmniSafe actor as a pure function of one flat parameter vector.

Meta-CPO needs the adapted parameters phi_i^k to stay differentiable functions of the meta
parameters theta (eq. 11). The actor (``GaussianLearningActor``: an MLP mean and a learned log-std)
is therefore evaluated with ``torch.func.functional_call`` on parameters unflattened from a vector,
never by writing into the module. ``functional_call`` goes through ``forward``, which caches the
last distribution in ``actor._current_dist``; nothing here reads that cache, so it cannot leak one
task's distribution into another.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from omnisafe.models.actor.gaussian_learning_actor import GaussianLearningActor
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call, vmap


class FunctionalPolicy:
    """Evaluates ``actor`` at flat parameter vectors.

    Args:
        actor: An OmniSafe Gaussian actor (its parameters give the layout of the flat vector).
    """

    def __init__(self, actor: nn.Module) -> None:
        self.actor = actor
        self._names = [name for name, _ in actor.named_parameters()]
        self._shapes = [param.shape for _, param in actor.named_parameters()]
        self._sizes = [param.numel() for _, param in actor.named_parameters()]

    @property
    def num_params(self) -> int:
        """Length of the flat parameter vector."""
        return sum(self._sizes)

    def head_mask(self) -> torch.Tensor:
        """1 on the flat vector's entries of the head (``log_std`` and the mean network's last
        layer), 0 elsewhere: the parameters ``algo_cfgs.inner_params = head`` adapts."""
        modules = [name.rsplit('.', 1)[0] for name in self._names if name != 'log_std']
        head = {'log_std', *(name for name in self._names
                             if name != 'log_std' and name.rsplit('.', 1)[0] == modules[-1])}
        return torch.cat([torch.full((size,), float(name in head))
                          for name, size in zip(self._names, self._sizes, strict=True)])

    def flat_params(self) -> torch.Tensor:
        """The actor's current parameters as one detached vector."""
        return nn.utils.parameters_to_vector(self.actor.parameters()).detach().clone()

    def load(self, flat: torch.Tensor) -> None:
        """Write ``flat`` into the actor module (for saving and for rollouts)."""
        nn.utils.vector_to_parameters(flat.detach(), self.actor.parameters())

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameters by name; ``flat`` may carry leading batch dimensions (one policy per row)."""
        chunks = torch.split(flat, self._sizes, dim=-1)
        batch = flat.shape[:-1]
        return {
            name: chunk.reshape(*batch, *shape)
            for name, chunk, shape in zip(self._names, chunks, self._shapes, strict=True)
        }

    def stacked(self, thetas: torch.Tensor) -> StackedActor:
        """M policies, one per row of ``thetas`` (M, P), each to run on its own observation."""
        return StackedActor(self, thetas)

    def distribution(self, flat: torch.Tensor, obs: torch.Tensor) -> Normal:
        """The action distribution of the policy with parameters ``flat`` at ``obs``."""
        return functional_call(self.actor, self._unflatten(flat), (obs,))

    def log_prob(self, flat: torch.Tensor, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log pi_flat(act | obs), summed over action dimensions."""
        return self.distribution(flat, obs).log_prob(act).sum(-1)

    def kl(self, flat_old: torch.Tensor, flat_new: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Mean KL(pi_old || pi_new) over ``obs`` (the trust-region measure of TRPO/CPO)."""
        old = self.distribution(flat_old, obs)
        new = self.distribution(flat_new, obs)
        return kl_divergence(old, new).sum(-1).mean()

    def fisher_vector_product(
        self,
        flat: torch.Tensor,
        obs: torch.Tensor,
        damping: float,
        mean_over: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Return v -> (F + damping I) v, the Hessian of the KL at ``flat`` (held constant).

        ``flat`` is detached: the metric does not depend on theta in the meta-gradient (the
        differentiable step treats H as a constant; see ``cpo_step``). ``mean_over`` turns the
        Hessian of the mean KL over ``obs`` into that over more states than this process holds
        (distributed ranks), before the damping is added.
        """
        point = flat.detach().requires_grad_(True)
        kl = self.kl(point.detach(), point, obs)
        (grad_kl,) = torch.autograd.grad(kl, point, create_graph=True)

        def fvp(vector: torch.Tensor) -> torch.Tensor:
            (hvp,) = torch.autograd.grad(grad_kl @ vector.detach(), point, retain_graph=True)
            if mean_over is not None:
                hvp = mean_over(hvp)
            return hvp + damping * vector

        return fvp


class StackedActor:
    """M copies of the actor with their own parameters, each acting on its own observation.

    The batched sampler steps M environments in lockstep, environment i with policy i. Evaluating
    the M policies one after another would cost M small forward passes per environment step, an
    overhead several times the environment's own step. Here the M forward passes are one:
    for OmniSafe's ``GaussianLearningActor`` (an MLP mean of ``Linear`` layers and parameter-free
    activations, a state-independent log-std), each ``Linear`` becomes one batched matrix product
    over the stacked weights (``torch.baddbmm``); any other actor falls back to
    ``vmap(functional_call)``, which is general but slower. Sampling is reparametrised
    (``mean + std * noise``) so that the noise can be drawn per task, independently of M.

    Args:
        policy: The functional policy whose actor layout the rows of ``thetas`` follow.
        thetas: (M, P) flat parameters, one row per policy (detached: rollouts need no graph).
    """

    def __init__(self, policy: FunctionalPolicy, thetas: torch.Tensor) -> None:
        params = policy._unflatten(thetas.detach())  # pylint: disable=protected-access
        actor = policy.actor
        self._layers: list[tuple[torch.Tensor, torch.Tensor] | nn.Module] | None = None
        if isinstance(actor, GaussianLearningActor) and _is_plain_mlp(actor.mean):
            self._layers = []
            for index, module in enumerate(actor.mean):
                if isinstance(module, nn.Linear):
                    weight = params[f'mean.{index}.weight'].transpose(1, 2).contiguous()
                    bias = params[f'mean.{index}.bias'].unsqueeze(1).contiguous()
                    self._layers.append((weight, bias))
                elif not isinstance(module, nn.Identity):
                    self._layers.append(module)
            self.std = torch.exp(params['log_std'])
        else:
            self._params = params
            self._actor = actor
            self.std = vmap(self._scale)(params, torch.zeros(thetas.shape[0], *_obs_shape(actor)))

    def _scale(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        return functional_call(self._actor, params, (obs,)).scale.expand(_act_shape(self._actor))

    def _loc(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        return functional_call(self._actor, params, (obs,)).loc

    def __call__(self, obs: torch.Tensor) -> Normal:
        """The M action distributions, policy i at ``obs[i]`` (an actor's ``forward``)."""
        return Normal(self.mean(obs), self.std)

    @torch.no_grad()
    def mean(self, obs: torch.Tensor) -> torch.Tensor:
        """(M, act_dim) action means, policy i at ``obs[i]``."""
        if self._layers is None:
            return vmap(self._loc)(self._params, obs)
        hidden = obs.unsqueeze(1)
        for layer in self._layers:
            if isinstance(layer, tuple):
                weight, bias = layer
                hidden = torch.baddbmm(bias, hidden, weight)
            else:
                # forward, not __call__: the same function without nn.Module's hook machinery
                # (which costs microseconds a call, per lockstep of the sampler)
                hidden = layer.forward(hidden)
        return hidden.squeeze(1)


def _is_plain_mlp(module: nn.Module) -> bool:
    """A ``Sequential`` of ``Linear`` layers and parameter-free elementwise activations."""
    if not isinstance(module, nn.Sequential):
        return False
    return all(isinstance(layer, nn.Linear) or not any(True for _ in layer.parameters())
               for layer in module)


def _obs_shape(actor: nn.Module) -> tuple[int, ...]:
    return (int(actor._obs_dim),)  # pylint: disable=protected-access


def _act_shape(actor: nn.Module) -> tuple[int, ...]:
    return (int(actor._act_dim),)  # pylint: disable=protected-access
