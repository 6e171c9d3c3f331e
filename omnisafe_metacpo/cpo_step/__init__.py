r"""The differentiable CPO step of Meta-CPO (Cho & Sun, AAAI 2024, eq. 3, 4, 9 and 12).

Every local adaptation (eq. 9) and the meta update (eq. 12) solve the same linear-quadratic problem

.. math::

    x^\star = \arg\max_x \; g^\top x \quad \text{s.t.} \quad
    \tfrac12 x^\top H x \le \delta, \qquad b + a^\top x \le 0,

with ``g`` the reward gradient, ``a`` the cost gradient, ``b = J_C - h`` and trust region ``delta``.
When no ``x`` satisfies both constraints, CPO takes the recovery step of eq. (4),
:math:`x = -\sqrt{2\delta / a^\top H^{-1} a}\; H^{-1} a` (Achiam et al., "Constrained Policy
Optimization", ICML 2017). The paper differentiates through this problem with cvxpylayers (its
"DCO" layer, Agrawal et al. 2019). The solution is known in closed form (Achiam et al. 2017,
appendix 10.2): inside each case it is a smooth function of ``(g, a, b, delta)`` whose derivative
is the one implicit differentiation of the KKT system (eq. 7) gives.

One entry point, :func:`cpo_step`, with two backends and two metrics, one module each:

* :mod:`~omnisafe_metacpo.cpo_step.closed_form` -- backend ``'closed_form'`` (default): batched,
  CPU or GPU, exact first derivatives through every case;
* :mod:`~omnisafe_metacpo.cpo_step.dco_layer` -- backend ``'cvxpylayers'``: the paper's DCO layer,
  the exact same problem solved by a conic solver; the reference the closed form is tested against;
* metric ``'euclidean'``: ``H = I``, as in the paper (its section 5 replaces the KL metric by the
  Euclidean one because of cvxpylayers);
* :mod:`~omnisafe_metacpo.cpo_step.fisher` -- metric ``'fisher'``: ``H`` given as a Fisher-vector
  product, ``H^-1 g`` and ``H^-1 a`` by conjugate gradients differentiated implicitly, ``H`` held
  constant in the derivative (closed form only).

:mod:`~omnisafe_metacpo.cpo_step.api` holds :func:`cpo_step` and its argument checks,
:mod:`~omnisafe_metacpo.cpo_step.types` the result and case types; both are re-exported here.

Sign conventions: ``g`` is the gradient of the quantity to *increase* (reward surrogate), ``a`` the
gradient of the quantity to keep below the limit (cost surrogate); the step is added to the
parameters. OmniSafe's ``CPO._update_actor`` uses the same convention for its ``x``/``grads``.
"""

from omnisafe_metacpo.cpo_step.api import cpo_step, linearized_change
from omnisafe_metacpo.cpo_step.fisher import cg_solve
from omnisafe_metacpo.cpo_step.types import (
    BACKENDS,
    FVP,
    METRICS,
    SOLVERS,
    CPOCase,
    CPOStep,
    CPOStepError,
)

__all__ = [
    'BACKENDS',
    'FVP',
    'METRICS',
    'SOLVERS',
    'CPOCase',
    'CPOStep',
    'CPOStepError',
    'cg_solve',
    'cpo_step',
    'linearized_change',
]
