"""Meta-CPO (and its paper preset), Meta-TRPO and CPOCorrected, registered on import."""

from omnisafe_metacpo.algorithms.cpo_corrected import CPOCorrected
from omnisafe_metacpo.algorithms.meta_cpo import MetaCPO
from omnisafe_metacpo.algorithms.meta_cpo_paper import MetaCPOPaper
from omnisafe_metacpo.algorithms.meta_trpo import MetaTRPO

__all__ = ['CPOCorrected', 'MetaCPO', 'MetaCPOPaper', 'MetaTRPO']
