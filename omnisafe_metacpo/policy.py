"""The OmniSafe actor as a pure function of one flat parameter vector.

Meta-CPO needs the adapted parameters phi_i^k to stay differentiable functions of the meta
parameters theta (eq. 11). The actor (``GaussianLearningActor``: an MLP mean and a learned log-std)
is therefore evaluated with ``torch.func.functional_call`` on parameters unflattened from a vector,
never by writing into the module. ``functional_call`` goes through ``forward``, which caches the
last distribution in ``actor._current_dist``; nothing here reads that cache, so it cannot leak one
task's distribution into another.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call


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

    def flat_params(self) -> torch.Tensor:
        """The actor's current parameters as one detached vector."""
        return nn.utils.parameters_to_vector(self.actor.parameters()).detach().clone()

    def load(self, flat: torch.Tensor) -> None:
        """Write ``flat`` into the actor module (for saving and for rollouts)."""
        nn.utils.vector_to_parameters(flat.detach(), self.actor.parameters())

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        chunks = torch.split(flat, self._sizes)
        return {
            name: chunk.view(shape)
            for name, chunk, shape in zip(self._names, chunks, self._shapes, strict=True)
        }

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
    ):
        """Return v -> (F + damping I) v, the Hessian of the KL at ``flat`` (held constant).

        ``flat`` is detached: the metric does not depend on theta in the meta-gradient (the
        differentiable step treats H as a constant; see ``cpo_step``).
        """
        point = flat.detach().requires_grad_(True)
        kl = self.kl(point.detach(), point, obs)
        (grad_kl,) = torch.autograd.grad(kl, point, create_graph=True)

        def fvp(vector: torch.Tensor) -> torch.Tensor:
            (hvp,) = torch.autograd.grad(grad_kl @ vector.detach(), point, retain_graph=True)
            return hvp + damping * vector

        return fvp
