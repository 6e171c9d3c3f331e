"""Registration of the plug-in with OmniSafe 0.5.0, from outside.

OmniSafe has registries for algorithms (``omnisafe.algorithms.registry``) and environments
(``omnisafe.envs.core.env_register``); both work from outside. Three things do not, and are adapted
here without editing OmniSafe:

* the list of algorithm names is a read-only ``MappingProxyType`` frozen at import and copied by
  name into several modules (``omnisafe``, ``omnisafe.algorithms.algo_wrapper``,
  ``omnisafe.common.experiment_grid``). Every module attribute bound to the old proxy is rebound
  to a new proxy that also lists the plug-in's algorithms;
* default configs are always read from ``omnisafe/configs/<type>/<Algo>.yaml``: the name
  ``get_default_kwargs_yaml`` in ``algo_wrapper`` and ``ExperimentGrid.check_variant_vaild`` are
  replaced by versions that read the plug-in's ``configs/`` for its algorithms;
* stock configs (CPO, TRPO, ...) do not declare ``env_cfgs``, so the task split, episodes per task
  and task seed could not be chosen for a ``Meta*`` env. For those env ids the defaults of
  :data:`META_ENV_CFGS` are added to whatever algorithm's config is loaded.

Defects of OmniSafe's CLI (dotted paths, its defaults overriding the YAML) are repaired in
:mod:`omnisafe_metacpo.compat`, also from :func:`install`; so is ``--parallel N`` for MetaCPO /
MetaTRPO (their ranks' process group gets ``train_cfgs.dist_timeout``:
:func:`omnisafe_metacpo.parallel.patch_algo_wrapper`).

:func:`install` runs automatically after ``omnisafe`` is first imported (see
``_omnisafe_metacpo_hook.py``).
"""

from __future__ import annotations

import os
import sys
from types import MappingProxyType
from typing import Any

from omnisafe_metacpo import compat

#: Algorithms of the plug-in, by OmniSafe algorithm type.
PLUGIN_ALGORITHMS: dict[str, tuple[str, ...]] = {
    'on-policy': ('MetaCPO', 'MetaCPOPaper', 'MetaTRPO', 'CPOCorrected'),
}

#: ``env_cfgs`` accepted by the ``Meta*`` envs for every OmniSafe algorithm.
META_ENV_CFGS: dict[str, Any] = {'split': 'train', 'episodes_per_task': 1, 'task_seed': None}

_installed = False


def configs_dir() -> str:
    """The plug-in's YAML directory (inside the wheel, or ``./configs`` in a checkout)."""
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for candidate in (
        os.path.join(package_dir, '_configs'),
        os.path.join(os.path.dirname(package_dir), 'configs'),
    ):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f'no configs directory next to {package_dir}')


def _plugin_names() -> set[str]:
    return {name for names in PLUGIN_ALGORITHMS.values() for name in names}


def is_plugin_algo(algo: str) -> bool:
    """Whether ``algo`` is one of the plug-in's algorithms."""
    return algo in _plugin_names()


def _meta_env_ids() -> set[str]:
    """Ids registered by this package (standard ids keep their stock OmniSafe env)."""
    import task_distributions

    return {
        env_id
        for env_id in task_distributions.supported_env_ids()
        if task_distributions.env_entry(env_id).is_custom
    }


def _yaml_chain(algo: str) -> list[dict[str, Any]]:
    """The plug-in YAML of ``algo`` after those it builds on (its ``base:``, recursively).

    A preset such as ``MetaCPOPaper.yaml`` names ``base: MetaCPO`` and lists only what it
    changes: the base's ``defaults``, then the preset's, then the base's section for the env id,
    then the preset's.
    """
    from omnisafe.utils.config import load_yaml

    chain: list[dict[str, Any]] = []
    name: str | None = algo
    while name is not None:
        kwargs = load_yaml(os.path.join(configs_dir(), f'{name}.yaml'))
        chain.insert(0, kwargs)
        name = kwargs.get('base')
        if name is not None and not is_plugin_algo(name):
            raise ValueError(f'{algo}.yaml: base: {name} is not an algorithm of the plug-in '
                             f'({", ".join(sorted(_plugin_names()))})')
        if len(chain) > len(_plugin_names()):
            raise ValueError(f'{algo}.yaml: its base: entries form a cycle')
    return chain


def load_default_config(algo: str, env_id: str, algo_type: str) -> Any:
    """OmniSafe's ``get_default_kwargs_yaml``, reading the plug-in's YAML for its algorithms.

    Returns the ``Config`` of defaults updated by the env-specific section, with ``env_cfgs``
    defaults added for ``Meta*`` env ids.
    """
    from omnisafe.utils.config import Config

    from omnisafe_metacpo._original import get_default_kwargs_yaml

    if is_plugin_algo(algo):
        config = Config.dict2config({})
        chain = _yaml_chain(algo)
        # Every file's defaults, then every file's section for the env (the more specific wins).
        for section in ('defaults', env_id):
            for kwargs in chain:
                if kwargs.get(section) is not None:
                    config.recurisve_update(kwargs[section])
    else:
        config = get_default_kwargs_yaml(algo, env_id, algo_type)
    if env_id in _meta_env_ids():
        env_cfgs = dict(META_ENV_CFGS)
        if config.get('env_cfgs'):
            env_cfgs.update(config['env_cfgs'].todict())
        config['env_cfgs'] = Config.dict2config(env_cfgs)
    return config


def _check_variant_valid(self: Any, variant: dict[str, Any]) -> None:
    """``ExperimentGrid.check_variant_vaild`` that knows the plug-in's configs."""
    from omnisafe.algorithms import ALGORITHM2TYPE
    from omnisafe.utils.tools import recursive_check_config

    algo_type = ALGORITHM2TYPE.get(variant['algo'], '')
    default = load_default_config(variant['algo'], variant.get('env_id', ''), algo_type).todict()
    recursive_check_config(variant, default, exclude_keys=('algo', 'env_id'))


def _rebind_algorithm_lists() -> None:
    import omnisafe.algorithms as algorithms

    old_all, old_types = algorithms.ALGORITHMS, algorithms.ALGORITHM2TYPE
    new_all = {key: tuple(value) for key, value in old_all.items()}
    new_types = dict(old_types)
    for algo_type, names in PLUGIN_ALGORITHMS.items():
        added = tuple(name for name in names if name not in new_all[algo_type])
        new_all[algo_type] = new_all[algo_type] + added
        new_all['all'] = new_all['all'] + added
        new_types.update(dict.fromkeys(names, algo_type))
    proxy_all, proxy_types = MappingProxyType(new_all), MappingProxyType(new_types)
    for name, module in list(sys.modules.items()):
        if module is None or not (name == 'omnisafe' or name.startswith('omnisafe.')):
            continue
        for attr, value in list(vars(module).items()):
            if value is old_all:
                setattr(module, attr, proxy_all)
            elif value is old_types:
                setattr(module, attr, proxy_types)


def install() -> None:
    """Register the plug-in's environments and algorithms with OmniSafe (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True

    import omnisafe.algorithms.algo_wrapper as algo_wrapper
    import omnisafe.common.experiment_grid as experiment_grid
    from omnisafe.envs.core import env_register

    from omnisafe_metacpo import _original

    _original.get_default_kwargs_yaml = algo_wrapper.get_default_kwargs_yaml
    from omnisafe_metacpo.envs import TaskDistributionEnv

    env_register(TaskDistributionEnv)
    # Importing the algorithm modules registers them (``@registry.register``).
    import omnisafe_metacpo.algorithms  # noqa: F401

    _rebind_algorithm_lists()
    algo_wrapper.get_default_kwargs_yaml = load_default_config
    experiment_grid.ExperimentGrid.check_variant_vaild = _check_variant_valid
    compat.patch_evaluator()
    compat.patch_custom_cfgs_parser()
    compat.patch_cli_defaults(is_plugin_algo)
    # Metrics/EpDiscCost (the paper's discounted cost) in the progress of stock algorithms too.
    from omnisafe_metacpo import disc_cost_log

    disc_cost_log.install()
    # --parallel N: the process group of a torchrun rank gets train_cfgs.dist_timeout.
    from omnisafe_metacpo import parallel

    parallel.patch_algo_wrapper(is_plugin_algo)
