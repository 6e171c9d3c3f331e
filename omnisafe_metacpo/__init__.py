"""Meta-CPO for OmniSafe (Cho & Sun, "Constrained Meta-Reinforcement Learning for Adaptable Safety
Guarantee with Differentiable Convex Programming", AAAI 2024).

Importing this package is cheap: it runs at interpreter start through ``omnisafe_metacpo.pth``.
Everything heavy (torch, OmniSafe, safety-gymnasium) is imported lazily.
"""

from __future__ import annotations

__version__ = '0.1.0'


def install() -> None:
    """Register the plug-in with OmniSafe and safety-gymnasium now (normally done on import)."""
    from omnisafe_metacpo.compat import patch_safety_gymnasium_dataclasses

    patch_safety_gymnasium_dataclasses()
    import omnisafe  # noqa: F401  (the import hook registers everything after this import)

    from omnisafe_metacpo.integration import install as _install

    _install()


def check_installed() -> None:
    """Fail loudly if the start-up hook did not register the plug-in (used by ``make setup``)."""
    import sys

    from omnisafe.algorithms import ALGORITHMS
    from omnisafe.envs.core import support_envs

    if '_hook' not in dir(sys.modules.get('omnisafe_metacpo')) and 'omnisafe_metacpo._hook' not in sys.modules:
        raise RuntimeError('omnisafe_metacpo.pth was not executed: is the package installed?')
    missing = [name for name in ('MetaCPO', 'MetaTRPO') if name not in ALGORITHMS['all']]
    missing += [env for env in ('MetaPointCircle-v0',) if env not in support_envs()]
    if missing:
        raise RuntimeError(f'plug-in not registered with OmniSafe: missing {missing}')
