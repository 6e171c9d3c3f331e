"""Deprecated alias: ``python -m omnisafe_metacpo.summary`` is now the console script
``omnisafe-metacpo-summary`` (:mod:`omnisafe_metacpo.evaluation.summary`).
Kept for one release."""

from __future__ import annotations

import warnings

from omnisafe_metacpo.evaluation.summary import main

warnings.warn('python -m omnisafe_metacpo.summary is deprecated and will be removed: use the '
              'omnisafe-metacpo-summary command (omnisafe_metacpo.evaluation.summary)',
              DeprecationWarning, stacklevel=1)

__all__ = ['main']

if __name__ == '__main__':
    main()
