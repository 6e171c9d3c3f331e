"""Meta-CPO and Meta-TRPO, registered with OmniSafe on import."""

from omnisafe_metacpo.algorithms.meta_cpo import MetaCPO
from omnisafe_metacpo.algorithms.meta_trpo import MetaTRPO

__all__ = ['MetaCPO', 'MetaTRPO']
