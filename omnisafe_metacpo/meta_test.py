"""Deprecated alias: ``python -m omnisafe_metacpo.meta_test`` is now the console script
``omnisafe-metacpo-meta-test`` (:mod:`omnisafe_metacpo.evaluation.saved_run`).
Kept for one release."""

from __future__ import annotations

import warnings

from omnisafe_metacpo.evaluation.saved_run import main

warnings.warn('python -m omnisafe_metacpo.meta_test is deprecated and will be removed: use the '
              'omnisafe-metacpo-meta-test command (omnisafe_metacpo.evaluation.saved_run)',
              DeprecationWarning, stacklevel=1)

__all__ = ['main']

if __name__ == '__main__':
    main()
