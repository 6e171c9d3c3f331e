"""Meta-iterations over torch.distributed ranks (``omnisafe train --parallel N``, torchrun).

:mod:`.ranks` is what the algorithm sees (one object, a no-op in a single process); below it
:mod:`.collectives`, :mod:`.normalizer_sync`, :mod:`.health` and :mod:`.launch`.
"""
