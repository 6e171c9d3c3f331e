"""The front door: registration of the plug-in with OmniSafe 0.5.0, from outside.

OmniSafe has registries for algorithms (``omnisafe.algorithms.registry``) and environments
(``omnisafe.envs.core.env_register``); both work from outside. What does not is adapted here
without editing OmniSafe:

* the list of algorithm names is a read-only ``MappingProxyType`` frozen at import and copied by
  name into several modules (``omnisafe``, ``omnisafe.algorithms.algo_wrapper``,
  ``omnisafe.common.experiment_grid``). Every module attribute bound to the old proxy is rebound
  to a new proxy that also lists the plug-in's algorithms;
* default configs are always read from ``omnisafe/configs/<type>/<Algo>.yaml``: the name
  ``get_default_kwargs_yaml`` in ``algo_wrapper`` and ``ExperimentGrid.check_variant_vaild`` are
  replaced by versions that read the plug-in's ``configs/`` for its algorithms
  (:mod:`omnisafe_metacpo.plugin.configs`);
* defects of OmniSafe's CLI and evaluator (:mod:`omnisafe_metacpo.plugin.compat`), the paper's
  discounted cost in the progress of stock algorithms (:mod:`omnisafe_metacpo.plugin.disc_cost_log`)
  and ``--parallel N`` for the plug-in's algorithms (their ranks' process group gets
  ``train_cfgs.dist_timeout``: :func:`omnisafe_metacpo.distributed.launch.patch_algo_wrapper`).

:func:`install` runs automatically after ``omnisafe`` is first imported (see
``_omnisafe_metacpo_hook.py``). This module is the only importer of
:mod:`omnisafe_metacpo.algorithms`: importing it registers them (``@registry.register``).
"""

from __future__ import annotations

import sys
from types import MappingProxyType
from typing import Any

import omnisafe.algorithms as algorithms
import omnisafe.algorithms.algo_wrapper as algo_wrapper
import omnisafe.common.experiment_grid as experiment_grid
from omnisafe.envs.core import env_register
from omnisafe.utils.tools import recursive_check_config

import omnisafe_metacpo.algorithms  # noqa: F401  (registers the algorithms with OmniSafe)
from omnisafe_metacpo.distributed import launch
from omnisafe_metacpo.plugin import _original, compat, disc_cost_log
from omnisafe_metacpo.plugin.configs import PLUGIN_ALGORITHMS, is_plugin_algo, load_default_config
from omnisafe_metacpo.sampling.envs import TaskDistributionEnv

_installed = False


def _check_variant_valid(self: Any, variant: dict[str, Any]) -> None:
    """``ExperimentGrid.check_variant_vaild`` that knows the plug-in's configs."""
    algo_type = algorithms.ALGORITHM2TYPE.get(variant['algo'], '')
    default = load_default_config(variant['algo'], variant.get('env_id', ''), algo_type).todict()
    recursive_check_config(variant, default, exclude_keys=('algo', 'env_id'))


def _rebind_algorithm_lists() -> None:
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
    _original.get_default_kwargs_yaml = algo_wrapper.get_default_kwargs_yaml
    env_register(TaskDistributionEnv)
    _rebind_algorithm_lists()
    algo_wrapper.get_default_kwargs_yaml = load_default_config
    experiment_grid.ExperimentGrid.check_variant_vaild = _check_variant_valid
    compat.patch_evaluator()
    compat.patch_custom_cfgs_parser()
    compat.patch_cli_defaults(is_plugin_algo)
    compat.patch_marker_rendering()
    # Metrics/EpDiscCost (the paper's discounted cost) in the progress of stock algorithms too.
    disc_cost_log.install()
    # --parallel N: the process group of a torchrun rank gets train_cfgs.dist_timeout.
    launch.patch_algo_wrapper(is_plugin_algo)
